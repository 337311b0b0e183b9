"""The daemon's pool store alongside real peer processes on the same pool file.

A cloud-init-style appender (flock only) and a kvp_client-style reader
(POSIX read lock only) run while LinuxPoolStore does SET/DELETE/GET. Neither
peer's lock excludes the other peer, only our store takes both; so the
test shows that the store excludes both kinds while it edits, that it never
writes over a record appended meanwhile, and that a reader under a POSIX lock
never sees a half-done edit.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from pool_peers import appended_value

from hvguest.abi.constants import KvpPool
from hvguest.linux.pools import LinuxPoolStore, read_pool

PEERS = Path(__file__).with_name("pool_peers.py")
GUEST = KvpPool.GUEST
APPENDS = 300
MIN_OPERATIONS = 300
MAX_OPERATIONS = 20_000
JOIN_TIMEOUT = 60


def test_appender_and_reader_alongside_the_daemon_lose_and_tear_nothing(tmp_path: Path) -> None:
    state_dir = tmp_path / "hyperv"
    path = state_dir / ".kvp_pool_1"
    stop = tmp_path / "stop-reading"
    rng = random.Random(1234)
    model: dict[bytes, bytes] = {}
    with LinuxPoolStore(state_dir) as store:  # fsync on, as the daemon runs
        appender = subprocess.Popen([sys.executable, PEERS, "append", path, str(APPENDS), "0.001"])
        reader = subprocess.Popen(
            [sys.executable, PEERS, "read", path, stop, "1000000"], stdout=subprocess.PIPE
        )
        try:
            operations = 0
            # Keep editing while the appender runs, so that the two really overlap.
            while operations < MAX_OPERATIONS and (
                operations < MIN_OPERATIONS or appender.poll() is None
            ):
                operations += 1
                key = b"store-%d" % rng.randrange(30)
                choice = rng.random()
                if choice < 0.5:
                    value = key + b"=v%d" % operations
                    store.set(GUEST, key, value)
                    model[key] = value
                elif choice < 0.75:
                    assert store.delete(GUEST, key) == (key in model)
                    model.pop(key, None)
                else:
                    assert store.get(GUEST, key) == model.get(key)
            assert appender.wait(timeout=JOIN_TIMEOUT) == 0
        finally:
            stop.touch()
            appender.kill()
            out, _ = reader.communicate(timeout=JOIN_TIMEOUT)

        report = json.loads(out)
        assert report["rounds"] > 0
        assert report["problems"] == []
        for number in range(APPENDS):  # zero lost records
            key = b"ci|%d" % number
            assert store.get(GUEST, key) == appended_value(key)
        for key in (b"store-%d" % n for n in range(30)):
            assert store.get(GUEST, key) == model.get(key)

    contents = read_pool(path)
    assert contents.partial_tail == b""
    keys = [record.key for record in contents.records]
    assert len(keys) == len(set(keys)) == APPENDS + len(model)  # no duplicate, no blank slot
    assert [key for key in keys if key.startswith(b"ci|")] == [
        b"ci|%d" % number for number in range(APPENDS)
    ]
