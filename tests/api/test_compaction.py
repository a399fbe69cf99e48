"""df-api compacts the store's change log by the [store] policy, as an operator configures it:
a real df-api process, its INI file, a watcher left behind told to resync."""
import json
import subprocess
import urllib.request

import pytest

from dragonflow import store as df_store
from dragonflow.lab.cloud import wait_for
from dragonflow.store import api
from tests.api.conftest import VENV_BIN, free_port


def test_df_api_compacts_the_change_log_by_its_policy(tmp_path):
    port, url = free_port(), f'sqlite:///{tmp_path}/nb.db'
    config = tmp_path / 'df-api.ini'
    config.write_text(f'[store]\nurl = {url}\ncompact_keep_revisions = 2\n'
                      f'compact_keep_seconds = 0\ncompact_interval = 1\n\n'
                      f'[api]\nbind_port = {port}\naccess_log = false\n')
    log = tmp_path / 'df-api.log'
    with open(log, 'wb') as out:
        server = subprocess.Popen([str(VENV_BIN / 'df-api'), '--config-file', str(config)],
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _answers(f'http://127.0.0.1:{port}/'), 30, what='df-api up')
        store = df_store.connect(url)
        networks = iter(range(100))

        def one_more_then_look() -> bool:
            """Commits spread over the compactor's ticks: it compacts only revisions it has
            seen the head at, and keeps the latest two commits."""
            _post(f'http://127.0.0.1:{port}/v2.0/networks',
                  {'network': {'name': f'n{next(networks)}'}})
            return _compacted(store)
        wait_for(one_more_then_look, 20, interval=0.3, what='the change log compacted')
        with pytest.raises(api.Compacted) as behind:
            store.changes(0)
        kept = store.changes(behind.value.oldest)  # a resync goes on from there
        assert len({e.revision for e in kept}) >= 2
        assert 'Traceback' not in log.read_text()
    finally:
        server.terminate()
        server.wait(10)


def _answers(url) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def _post(url, body) -> None:
    request = urllib.request.Request(url, json.dumps(body).encode(), method='POST',
                                     headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 201


def _compacted(store) -> bool:
    try:
        store.changes(0)
    except api.Compacted:
        return True
    return False
