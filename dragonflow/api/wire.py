"""What crosses the wire: request bodies read within a size limit and parsed strictly, JSON
responses that always encode, and a NeutronError answer to any unexpected failure.

A request, whatever it holds, gets an answer on a connection that stays usable: bad input is
refused before anything reads or stores it, and a failure nobody foresaw is logged with its
traceback and answered as Neutron answers it (500, NeutronError body).
"""
import asyncio
import json
import logging
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from dragonflow.api import errors

LOG = logging.getLogger(__name__)

# Deepest nesting a body may have. Neutron's own bodies nest 5 levels at most (a port's
# binding:profile holding a list of dicts); deeper ones would only burden every reader of the
# stored object with recursion (pydantic refuses to serialize past ~255 levels).
MAX_DEPTH = 32
INVALID_BODY = 'Body contains invalid data'   # what Neutron's body validation hook says
# Of a refused body, at most this many times the limit is read and dropped, for this long, so
# that the 413 reaches the client (BodyLimit._drain).
DRAIN_FACTOR, DRAIN_SECONDS = 8, 5.0


class NeutronJSONResponse(JSONResponse):
    """JSON as Neutron sends it (oslo's jsonutils): non-ASCII escaped, so any text encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(',', ':')).encode('ascii')


def error_response(error: errors.NeutronError, **headers: str) -> NeutronJSONResponse:
    return NeutronJSONResponse(error.body(), status_code=error.status, headers=headers or None)


def parse_body(raw: bytes) -> Any:
    """The request's JSON object, or None for an empty body; HTTPBadRequest for anything a
    Neutron body cannot be: not JSON, not an object, NaN/Infinity, nested past MAX_DEPTH."""
    if not raw.strip():
        return None
    try:
        body = json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError):  # RecursionError: nesting past the C parser's limit
        raise errors.HTTPBadRequest(INVALID_BODY) from None
    if not isinstance(body, dict):
        raise errors.HTTPBadRequest(INVALID_BODY)
    if depth(body) > MAX_DEPTH:
        raise errors.HTTPBadRequest(f'{INVALID_BODY}: nested deeper than {MAX_DEPTH} levels')
    return body


def _not_json(constant: str):
    raise ValueError(f'{constant} is not JSON')


def depth(value: Any) -> int:
    """How deep lists and dicts nest in ``value`` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else \
            item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


class BodyLimit:
    """ASGI middleware: a request body over ``max_size`` bytes gets 413, as Neutron's
    oslo.middleware sizelimit answers. A declared Content-Length over the limit is refused
    before any of the body is read; a chunked body is counted as it arrives and refused once
    the count passes the limit, so no more than the limit and one chunk is ever held."""

    def __init__(self, app, max_size: int):
        self.app, self.max_size = app, max_size

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http':
            await self.app(scope, receive, send)
            return
        length = dict(scope['headers']).get(b'content-length', b'')
        if length.isdigit() and int(length) > self.max_size:
            if int(length) <= self.max_size * DRAIN_FACTOR:
                await self._drain(receive)
            await self._refuse(scope, receive, send, (
                f'Request is too large. Larger than max_request_body_size ({self.max_size}).'))
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message['type'] == 'http.request':
                received += len(message.get('body', b''))
                if received > self.max_size:
                    raise _TooLarge()
            return message

        watched = _WatchedSend(send)
        try:
            await self.app(scope, limited_receive, watched)
        except _TooLarge:
            if watched.started:
                raise
            await self._drain(receive, received)
            await self._refuse(scope, receive, send,
                               f'Request is too large. Larger than {self.max_size}.')

    async def _drain(self, receive, received: int = 0) -> None:
        """Read and drop what is left of a refused body (``received`` bytes of it read
        already), within a budget of bytes and time.
        Closing a connection with unread data makes the kernel reset it, and a reset can
        destroy the answer before the client reads it: a client still sending would see a
        broken pipe, not the 413 (web servers' "lingering close")."""
        async def drain(budget: int) -> None:
            while budget > 0:
                message = await receive()
                if message['type'] != 'http.request' or not message.get('more_body'):
                    return
                budget -= len(message.get('body', b''))
        try:
            await asyncio.wait_for(drain(self.max_size * DRAIN_FACTOR - received),
                                   DRAIN_SECONDS)
        except (asyncio.TimeoutError, ClientDisconnect):
            pass

    @staticmethod
    async def _refuse(scope, receive, send, message: str) -> None:
        # What is left unread of the body is dropped: the connection closes after the answer.
        error = errors.HTTPRequestEntityTooLarge(message)
        await error_response(error, connection='close')(scope, receive, send)


class _TooLarge(Exception):
    """Raised out of the body reader when a request body passes the limit."""


class _WatchedSend:
    """An ASGI send that notes whether the answer has started (then no other can be sent)."""

    def __init__(self, send):
        self.send, self.started = send, False

    async def __call__(self, message):
        self.started = self.started or message['type'] == 'http.response.start'
        await self.send(message)


class LastResort:
    """ASGI middleware: an exception nothing else handled is logged with its traceback and
    answered 500 with a NeutronError body. Starlette's own handler answers and then re-raises,
    which makes the server drop the connection; here the connection stays usable."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http':
            await self.app(scope, receive, send)
            return
        watched = _WatchedSend(send)
        try:
            await self.app(scope, receive, watched)
        except ClientDisconnect:
            return   # the client left before its body arrived: no one to answer
        except Exception:
            LOG.exception('%s %s failed', scope.get('method'), scope.get('path'))
            if watched.started:  # part of an answer is out: only closing the connection is left
                raise
            await error_response(errors.HTTPInternalServerError())(scope, receive, send)
