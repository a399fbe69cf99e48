"""dfctl status: every registered chassis, up while its heartbeat lives, with what it says;
every router with a gateway, with its gateway chassis and who says it holds it."""
from dragonflow import store as df_store
from dragonflow.cli import dfctl
from dragonflow.model import Chassis, ChassisStatus, ExternalGateway, Port, Router
from dragonflow.model.objects import DEVICE_OWNER_CHASSIS_SNAT


def _status(tmp_path, capsys) -> list[list[str]]:
    """dfctl status's tables, each a list of rows (split on blanks), header first."""
    config = tmp_path / 'df.ini'
    config.write_text(f'[store]\nurl = sqlite:///{tmp_path}/nb.db\n')
    assert dfctl.main(['--config-file', str(config), 'status']) == 0
    out = capsys.readouterr().out.splitlines()[1:]   # after the store's line
    tables = [[]]
    for line in out:
        if line.strip():
            tables[-1].append(line.split())
        else:
            tables.append([])
    return tables


def test_status_shows_live_chassis_up_and_silent_ones_down(tmp_path, capsys):
    store = df_store.connect(f'sqlite:///{tmp_path}/nb.db')
    for name, ip in (('ch1', '172.31.0.11'), ('ch2', '172.31.0.12')):
        store.put(Chassis.table, name, Chassis(id=name, tunnel_ip=ip).to_doc())
    store.heartbeat('ch1', ChassisStatus(revision_seen=2, networks=['n1', 'n2']).model_dump(),
                    ttl=60)
    (chassis,) = _status(tmp_path, capsys)   # no router with a gateway: no router table
    rows = {row[0]: row for row in chassis[1:]}
    assert rows['ch1'] == ['ch1', '172.31.0.11', 'up', '0', '2', '0', '2', '/', '2']
    assert rows['ch2'] == ['ch2', '172.31.0.12', 'DOWN', '0', '-', '-', '-', '/', '2']


def test_status_shows_routers_gateway_chassis_and_who_holds_them(tmp_path, capsys):
    store = df_store.connect(f'sqlite:///{tmp_path}/nb.db')
    for i, name in enumerate(('gw1', 'gw2', 'gw3')):
        store.put(Chassis.table, name, Chassis(id=name, tunnel_ip=f'172.31.0.{i + 1}',
                                               gateway=True).to_doc())
    gateway = ExternalGateway(network_id='public')
    routers = {'r1': ['gw1', 'gw2'], 'r2': ['gw2', 'gw1'], 'r3': [], 'r4': ['gw3']}
    for router_id, chassis in routers.items():
        store.put(Router.table, router_id, Router(
            id=router_id, key=1, name=f'name-{router_id}', external_gateway_info=gateway,
            gateway_chassis=chassis).to_doc())
    store.put(Router.table, 'inside', Router(id='inside', key=2).to_doc())  # no gateway
    for i, chassis in enumerate(('gw1', 'gw3')):
        store.put(Port.table, f'p{i}', Port(id=f'p{i}', key=i + 1, network_id='public',
                                            mac_address='fa:16:3e:00:00:01',
                                            device_owner=DEVICE_OWNER_CHASSIS_SNAT,
                                            device_id='r4', binding_host_id=chassis).to_doc())
    # gw1 holds r1; gw2 holds r2 and, as it sees its peers, r1 too; gw3 is silent.
    store.heartbeat('gw1', ChassisStatus(active_gateways=['r1']).model_dump(), ttl=60)
    store.heartbeat('gw2', ChassisStatus(active_gateways=['r1', 'r2']).model_dump(), ttl=60)
    _, gateways = _status(tmp_path, capsys)
    assert gateways == [
        ['ROUTER', 'NAME', 'GATEWAY', 'CHASSIS', 'ACTIVE', 'ON', 'CHASSIS', 'SNAT'],
        ['r1', 'name-r1', 'gw1,gw2', 'gw1,gw2', '0'],
        ['r2', 'name-r2', 'gw2,gw1', 'gw2', '0'],
        ['r3', 'name-r3', '-', '-', '0'],
        ['r4', 'name-r4', 'gw3', '-', '2']]
