"""The apps: each a pure function from the topology to the flows it wants.

An app module has NAME and ``flows(topology) -> iterable of Flow``. Its position in APPS is its
id, written into the top byte of every flow's cookie so a flow in the switch names its owner.
An app builds the flows of each unit (a port, a network, a router...) in a function of the
objects they depend on, marked ``@unit`` (units.py, memo.py): a pass builds again only the
flows of the units whose objects changed, and they come stamped with the app's id.
"""

from dragonflow.controller import flows as of
from dragonflow.controller import memo
from dragonflow.controller.apps import (
    arp_responder,
    classifier,
    dhcp,
    l2,
    l3,
    output,
    port_security,
    security_groups,
    tunnels,
)

# Order is the cookie's app id: append, never reorder (ids are in switches and dumps).
APPS = (classifier, arp_responder, l2, l3, output, tunnels, port_security, dhcp,
        security_groups)
APP_IDS = {app.NAME: index + 1 for index, app in enumerate(APPS)}
APP_NAMES = {index: name for name, index in APP_IDS.items()}


def desired_flows(topology) -> list[of.Flow]:
    """Every app's flows, each stamped with its app's cookie. A flow kept from the last pass
    comes back as the same stamped object, so the reconciler finds it unchanged at a glance."""
    memo.next_pass()
    result = []
    for app in APPS:
        app_id = APP_IDS[app.NAME]
        for flow in app.flows(topology):
            owner = flow.cookie >> of.COOKIE_APP_SHIFT
            if owner != app_id:
                if owner:
                    raise ValueError(f'{app.NAME} made a flow of {app_name(flow.cookie)}: {flow}')
                flow = flow.with_cookie(flow.cookie | of.cookie(app_id))  # outside a unit
            result.append(flow)
    return result


def app_name(cookie: int) -> str:
    return APP_NAMES.get(cookie >> of.COOKIE_APP_SHIFT, 'unknown')
