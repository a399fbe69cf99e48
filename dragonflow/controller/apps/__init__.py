"""The apps: each a pure function from the topology to the flows it wants.

An app module has NAME and ``flows(topology) -> iterable of Flow``. Its position in APPS is its
id, written into the top byte of every flow's cookie so a flow in the switch names its owner.
An app builds the flows of each unit (a port, a network, a router...) in a function of the
objects they depend on, marked ``@unit`` (units.py, memo.py): a pass builds again only the
flows of the units whose objects changed, and they come stamped with the app's id.

No app's bug stops the others. A unit that raises has no flows (units.py): one object's flows
go, the safe side for what it allows. An app that raises outside its units keeps the flows it
had (``AppFlows``): dropping a whole app (port security for every port, say) would cut every
tenant off, for one object's sake. Where two apps want one flow identity with different
actions, ``PRECEDENCE`` says whose is installed (the reconciler applies it): the apps that
enforce (port security, security groups) come before those that forward, and forwarding for a
real port before a service the controller synthesises (DHCP, whose ARP answers yield to any
port's).
"""
import logging

from dragonflow.controller import flows as of
from dragonflow.controller import memo
from dragonflow.controller.apps import (
    arp_responder,
    classifier,
    dhcp,
    floating_ips,
    l2,
    l3,
    output,
    port_security,
    provider,
    security_groups,
    snat,
    tunnels,
)

LOG = logging.getLogger(__name__)

# Order is the cookie's app id: append, never reorder (ids are in switches and dumps).
APPS = (classifier, arp_responder, l2, l3, output, tunnels, port_security, dhcp,
        security_groups, provider, floating_ips, snat)
APP_IDS = {app.NAME: index + 1 for index, app in enumerate(APPS)}
APP_NAMES = {index: name for name, index in APP_IDS.items()}
PRECEDENCE = (port_security, security_groups, classifier, floating_ips, snat, l3, l2, provider,
              arp_responder, tunnels, output, dhcp)
_RANKS = {APP_IDS[app.NAME]: rank for rank, app in enumerate(PRECEDENCE)}


def _app_flows(app, topology) -> list[of.Flow]:
    """The app's flows, each stamped with its app's cookie. A flow kept from the last pass
    comes back as the same stamped object, so the reconciler finds it unchanged at a glance."""
    app_id = APP_IDS[app.NAME]
    result = []
    for flow in app.flows(topology):
        owner = flow.cookie >> of.COOKIE_APP_SHIFT
        if owner != app_id:
            if owner:
                raise ValueError(f'{app.NAME} made a flow of {app_name(flow.cookie)}: {flow}')
            flow = flow.with_cookie(flow.cookie | of.cookie(app_id))  # outside a unit
        result.append(flow)
    return result


def desired_flows(topology) -> list[of.Flow]:
    """Every app's flows; an app's error is raised (the controller contains it: AppFlows)."""
    memo.next_pass()
    return [flow for app in APPS for flow in _app_flows(app, topology)]


class AppFlows:
    """Every app's flows, pass after pass: an app that raises outside its units keeps the
    flows of its last good pass (or, when it has had none in this process, the flows of it
    that br-int holds, from ``installed``: a restart deletes nothing), and its error is
    logged once (until it succeeds again)."""

    def __init__(self, installed=dict):
        """``installed()``: the flows the switch holds, by identity (the reconciler's)."""
        self._installed = installed
        self._last_good: dict[str, list[of.Flow]] = {}
        self._errors: dict[str, str] = {}

    @property
    def failing(self) -> tuple[str, ...]:
        """The apps whose last pass raised."""
        return tuple(self._errors)

    def __call__(self, topology) -> list[of.Flow]:
        memo.next_pass()
        result = []
        for app in APPS:
            try:
                flows = _app_flows(app, topology)
            except Exception as e:  # noqa: BLE001 - contained: see the class docstring
                flows = self._last_good.get(app.NAME)
                if flows is None:
                    app_id = APP_IDS[app.NAME]
                    flows = [f for f in self._installed().values() if f.app_id == app_id]
                self._failed(app.NAME, e, len(flows))
            else:
                self._last_good[app.NAME] = flows
                self._errors.pop(app.NAME, None)
            result.extend(flows)
        return result

    def _failed(self, name: str, error: Exception, kept: int) -> None:
        described = f'{type(error).__name__}: {error}'
        if self._errors.get(name) != described:
            LOG.error('app %s failed; it keeps %d flows it had', name, kept, exc_info=error)
        self._errors[name] = described


def app_name(cookie: int) -> str:
    return APP_NAMES.get(cookie >> of.COOKIE_APP_SHIFT, 'unknown')


def precedence(flow: of.Flow) -> tuple:
    """The reconciler's rank of a flow among conflicting ones (the first is installed)."""
    return (_RANKS.get(flow.app_id, len(_RANKS)), flow.cookie, repr(flow.actions))


def owner(flow: of.Flow) -> str:
    """Who made the flow: its app and the data-plane key of its object."""
    return f'{app_name(flow.cookie)} (object {flow.cookie & of.COOKIE_OBJECT_MASK})'
