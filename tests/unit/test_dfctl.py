"""dfctl status: every registered chassis, up while its heartbeat lives, with what it says."""
from dragonflow import store as df_store
from dragonflow.cli import dfctl
from dragonflow.model import Chassis, ChassisStatus


def test_status_shows_live_chassis_up_and_silent_ones_down(tmp_path, capsys):
    url = f'sqlite:///{tmp_path}/nb.db'
    store = df_store.connect(url)
    for name, ip in (('ch1', '172.31.0.11'), ('ch2', '172.31.0.12')):
        store.put(Chassis.table, name, Chassis(id=name, tunnel_ip=ip).to_doc())
    store.heartbeat('ch1', ChassisStatus(revision_seen=2, networks=['n1', 'n2']).model_dump(),
                    ttl=60)
    config = tmp_path / 'df.ini'
    config.write_text(f'[store]\nurl = {url}\n')
    assert dfctl.main(['--config-file', str(config), 'status']) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows['ch1'] == ['ch1', '172.31.0.11', 'up', '0', '2', '0', '2', '/', '2']
    assert rows['ch2'] == ['ch2', '172.31.0.12', 'DOWN', '0', '-', '-', '-', '/', '2']
