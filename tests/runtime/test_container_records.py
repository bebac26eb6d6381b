"""Container records on disk: what ContainerStore writes, and configs written by earlier versions."""

from __future__ import annotations

import json
from pathlib import Path

from pybuild.runtime.cgroups import Limits
from pybuild.runtime.containers import ContainerConfig, ContainerStore, VolumeMount
from pybuild.runtime.network.ports import PortBinding

CID = "ab" * 32

# config.json as pybuild wrote it while the limits were fields of the config itself.
OLD_CONFIG = {
    "id": CID, "name": "web", "image": "busybox", "image_id": "sha256:" + "1" * 64,
    "manifest": "sha256:" + "2" * 64, "created": "2024-05-01T10:00:00.000000000Z",
    "args": ["sleep", "60"], "env": ["PATH=/bin"], "cwd": "/", "user": "", "hostname": "abababababab",
    "network": "bridge", "tty": False, "interactive": False,
    "mounts": [{"kind": "volume", "source": "data", "target": "/data", "readonly": False, "anonymous": False}],
    "memory": 33554432, "memory_swap": 67108864, "cpus": 1.5, "cpu_shares": 512, "pids_limit": 20,
    "init": False, "stop_signal": "SIGTERM", "stop_timeout": 10, "auto_remove": False,
    "entrypoint": None, "cmd": ["sleep", "60"], "labels": {"a": "b"},
    "ports": [{"container_port": 80, "host_port": 8080, "host_ip": "", "proto": "tcp"}],
    "dns": [], "add_hosts": [],
}


def _store(tmp_path: Path, config: dict[str, object]) -> ContainerStore:
    store = ContainerStore(tmp_path)
    (store.dir / CID).mkdir(parents=True)
    (store.dir / CID / "config.json").write_text(json.dumps(config))
    (store.dir / CID / "state.json").write_text(json.dumps({"status": "exited", "exit_code": 3}))
    return store


def test_a_config_written_before_limits_were_a_record_loads(tmp_path: Path) -> None:
    store = _store(tmp_path, OLD_CONFIG)
    config = store.config(CID)
    assert config.limits == Limits(memory=33554432, memory_swap=67108864, cpus=1.5, cpu_shares=512, pids=20)
    assert config.mounts == (VolumeMount("volume", "data", "/data"),)
    assert config.ports == (PortBinding(80, 8080),) and config.cmd == ("sleep", "60")
    assert [c.id for c in store.walk()] == [CID] and store.resolve("web") == config
    assert store.state(CID).exit_code == 3


def test_an_old_config_without_limits_loads_unlimited(tmp_path: Path) -> None:
    old = {k: v for k, v in OLD_CONFIG.items() if k not in ("memory", "memory_swap", "cpus", "cpu_shares",
                                                            "pids_limit")}
    assert _store(tmp_path, old).config(CID).limits == Limits()
    none = {**OLD_CONFIG, "memory": None, "memory_swap": None, "cpus": None, "cpu_shares": None, "pids_limit": None}
    assert ContainerConfig.from_json(none).limits == Limits()


def test_limits_round_trip_as_a_record(tmp_path: Path) -> None:
    config = ContainerConfig.from_json(OLD_CONFIG)
    doc = config.to_json()
    assert doc["limits"] == {"memory": 33554432, "memory_swap": 67108864, "cpus": 1.5, "cpu_shares": 512,
                             "pids": 20, "cpu_period": None, "cpu_quota": None, "cpuset_cpus": None,
                             "cpuset_mems": None, "memory_reservation": None}
    assert not {"memory", "pids_limit"} & set(doc)
    store = ContainerStore(tmp_path)
    store.dir.mkdir()
    store.create(config)
    assert store.config(CID) == config
    assert ContainerConfig.from_json(json.loads(json.dumps(doc))) == config
