"""What every resource handler shares.

A handler knows one resource's rules. Its create/update/delete are plans over a Txn (see
txn.run): they read, check and queue conditional writes, and never commit themselves, so the
caller can retry them and nothing is written when they raise. Bodies reach a handler already
completed and validated from the resource's attribute map.
"""
import contextlib
import time
from typing import Any

from dragonflow.api import errors
from dragonflow.api.attributes import ResourceDef
from dragonflow.api.context import Context
from dragonflow.api.txn import Keys, Txn
from dragonflow.model import Model


def now() -> str:
    """Neutron's timestamp format."""
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())


def aliases(model: type[Model]) -> set[str]:
    """The document keys of ``model``: field aliases where set, else names."""
    return {field.alias or name for name, field in model.model_fields.items()
            if not field.exclude}


class Handler:
    rdef: ResourceDef
    model: type[Model]

    def __init__(self, conf):
        self.conf = conf

    # Plans

    def create(self, txn: Txn, keys: Keys, ctx: Context, body: dict) -> Model:
        raise NotImplementedError

    def update(self, txn: Txn, keys: Keys, ctx: Context, obj: Model, changes: dict) -> Model:
        """Default: the changes are plain attributes of the stored object."""
        return self.apply(txn, obj, changes)

    def create_many(self, txn: Txn, keys: Keys, ctx: Context, bodies: list[dict]) -> list:
        """A create of one or more objects (a bulk create is one plan, one commit)."""
        return [self.create(txn, keys, ctx, body) for body in bodies]

    def delete(self, txn: Txn, ctx: Context, obj: Model) -> None:
        txn.delete(obj)

    def before_list(self, store, ctx: Context, filters: dict) -> None:
        """What a listing does before reading (Neutron creates default security groups)."""

    def fence(self, store, id: str):
        """What a delete holds while it checks for dependents (see txn.fenced); yields the
        Fence to require in the deleting commit, or None."""
        return contextlib.nullcontext()

    # Helpers for the plans

    def build(self, body: dict, **fields: Any) -> Model:
        """A new object from a validated POST body plus the fields the API decides."""
        stamp = now()
        doc = {k: v for k, v in body.items() if k in aliases(self.model)}
        doc.update(created_at=stamp, updated_at=stamp, **fields)
        return self.model.model_validate(doc)

    def apply(self, txn: Txn, obj: Model, changes: dict) -> Model:
        """Queue ``obj`` with ``changes`` (document keys) as a conditional update."""
        doc = obj.to_doc()
        doc.update({k: v for k, v in changes.items() if k in aliases(self.model)})
        doc['updated_at'] = now()
        new = self.model.from_doc(doc, obj.revision)
        txn.update(new)
        return new

    # Reading

    def get(self, txn: Txn, ctx: Context, id: str, action: str = '') -> Model:
        """The object if the caller may see it (NotFound otherwise) and, when ``action`` is
        given, change it: a shared network is visible to all but changed by its owner only."""
        obj = txn.get(self.model, id)
        if obj is None or not self.visible_to(ctx, obj, txn):
            raise errors.not_found(self.rdef.name, id)
        if action and not ctx.owns(obj.project_id):
            raise errors.PolicyNotAuthorized(action=action)
        return obj

    def visible_to(self, ctx: Context, obj: Model, reader: Txn) -> bool:
        return ctx.owns(obj.project_id)

    def full(self, obj: Model, reader: Txn) -> dict:
        """Every attribute Neutron shows for ``obj`` (before the map picks the visible ones)."""
        doc = obj.to_doc()
        doc.update(tenant_id=obj.project_id, revision_number=obj.revision)
        return doc
