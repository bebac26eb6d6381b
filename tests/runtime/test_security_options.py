"""The option parsers of runtime/security.py and runtime/mountflag.py (no container needed)."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest

from pybuild.linux import syscalls
from pybuild.runtime import security
from pybuild.runtime.mountflag import MountFlagError, parse_mount
from pybuild.runtime.spec import DEFAULT_CAPS


def test_capability_names_are_normalised() -> None:
    assert security.normalize_capability("net_admin") == "CAP_NET_ADMIN"
    assert security.normalize_capability("CAP_SYS_TIME") == "CAP_SYS_TIME"
    assert security.normalize_capability("all") == "ALL"
    with pytest.raises(security.SecurityOptionError, match='unknown capability: "FLY"') as info:
        security.normalize_capability("FLY")
    assert info.value.exit_code == 125


def test_cap_add_and_drop_as_docker() -> None:
    assert security.tweak_capabilities(DEFAULT_CAPS, [], []) == DEFAULT_CAPS
    caps = security.tweak_capabilities(DEFAULT_CAPS, ["SYS_ADMIN"], ["MKNOD"])
    assert "CAP_SYS_ADMIN" in caps and "CAP_MKNOD" not in caps
    assert security.tweak_capabilities(DEFAULT_CAPS, ["CHOWN"], ["ALL"]) == ("CAP_CHOWN",)
    everything = security.tweak_capabilities(DEFAULT_CAPS, ["ALL"], ["SYS_ADMIN"])
    assert "CAP_SYS_ADMIN" not in everything and "CAP_SYS_MODULE" in everything
    # An added capability wins over the same one dropped (moby's TweakCapabilities).
    assert "CAP_NET_RAW" in security.tweak_capabilities(DEFAULT_CAPS, ["NET_RAW"], ["NET_RAW"])


def test_security_opts(tmp_path: Path) -> None:
    assert security.parse_security_opts([]) == security.SecurityOpts()
    assert security.parse_security_opts(["no-new-privileges"]).no_new_privileges
    assert security.parse_security_opts(["no-new-privileges:true"]).no_new_privileges
    assert not security.parse_security_opts(["no-new-privileges=false"]).no_new_privileges
    assert security.parse_security_opts(["seccomp=unconfined"]).seccomp == "unconfined"
    assert security.seccomp_profile(security.parse_security_opts(["seccomp=unconfined"])) is None
    assert security.parse_security_opts(["apparmor=unconfined", "label=disable"]) == security.SecurityOpts()
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW"}))
    opts = security.parse_security_opts([f"seccomp={profile}"])
    assert json.loads(opts.seccomp) == {"defaultAction": "SCMP_ACT_ALLOW"}
    stored = opts.as_docker_list()
    assert stored[0].startswith("seccomp={")
    assert security.parse_security_opts(stored).seccomp == opts.seccomp  # the inline form reads back
    for bad in ("seccomp", "no-new-privileges=maybe", "apparmor=docker-default", "label=type:x", "fly=1"):
        with pytest.raises(security.SecurityOptionError):
            security.parse_security_opts([bad])


def test_sysctls() -> None:
    assert security.parse_sysctls(["net.ipv4.ip_forward=1", "kernel.shmmax=1", "fs.mqueue.msg_max=20",
                                   "kernel.domainname=x", "net/core/somaxconn=5"], host_network=False) == (
        ("net.ipv4.ip_forward", "1"), ("kernel.shmmax", "1"), ("fs.mqueue.msg_max", "20"),
        ("kernel.domainname", "x"), ("net.core.somaxconn", "5"))
    with pytest.raises(security.SecurityOptionError, match="not in a separate kernel namespace"):
        security.parse_sysctls(["kernel.pid_max=5"], host_network=False)
    with pytest.raises(security.SecurityOptionError, match="host network namespace"):
        security.parse_sysctls(["net.ipv4.ip_forward=1"], host_network=True)
    with pytest.raises(security.SecurityOptionError, match="NAME=VALUE"):
        security.parse_sysctls(["net.ipv4.ip_forward"], host_network=False)


def test_ulimits() -> None:
    limit = security.parse_ulimit("nofile=1024:2048")
    assert (limit.resource, limit.soft, limit.hard) == (resource.RLIMIT_NOFILE, 1024, 2048)
    assert security.parse_ulimit("nproc=10").hard == 10
    assert security.parse_ulimit("core=-1").soft == syscalls.RLIM_INFINITY
    assert security.ulimit_doc(security.parse_ulimit("core=-1")) == {"Name": "core", "Hard": -1, "Soft": -1}
    for bad, why in (("nofile=2:1", "above the hard"), ("wings=1", "unknown limit"), ("nofile", "NAME=SOFT"),
                     ("nofile=x", "not a number"), ("nofile=-5", "negative")):
        with pytest.raises(security.SecurityOptionError, match=why):
            security.parse_ulimit(bad)


def test_mount_flag(tmp_path: Path) -> None:
    m = parse_mount(f"type=bind,source={tmp_path},target=/data,readonly,bind-propagation=rshared")
    assert (m.kind, m.source, m.target, m.readonly, m.propagation) == ("bind", str(tmp_path), "/data", True,
                                                                       "rshared")
    assert not parse_mount(f"type=bind,src={tmp_path},dst=/d,ro=false").readonly
    v = parse_mount("type=volume,src=cache,dst=/cache")
    assert (v.kind, v.source, v.anonymous) == ("volume", "cache", False)
    assert parse_mount("target=/anon").anonymous  # type defaults to volume
    t = parse_mount("type=tmpfs,destination=/t,tmpfs-size=64m,tmpfs-mode=1770")
    assert (t.kind, t.source) == ("tmpfs", f"size={64 << 20},mode=1770")
    for bad, why in (("type=bind,src=/nonexistent-x,dst=/d", "does not exist"),
                     ("type=bind,dst=/d", "source is required"),
                     ("type=tmpfs,src=x,dst=/d", "takes no source"),
                     ("type=tmpfs,dst=/d,tmpfs-size=lots", "tmpfs-size"),
                     ("type=tmpfs,dst=/d,tmpfs-mode=999", "tmpfs-mode"),
                     ("type=npipe,dst=/d", "not supported"),
                     ("type=volume,src=v", "target is required"),
                     ("type=volume,src=v,dst=rel", "absolute"),
                     ("type=volume,src=v,dst=/d,dst=/e", "given twice"),
                     (f"type=bind,src={tmp_path},dst=/d,bind-propagation=sideways", "bind-propagation"),
                     ("type=volume,src=vol,dst=/d,tmpfs-size=1", "unexpected field")):
        with pytest.raises(MountFlagError, match=why) as info:
            parse_mount(bad)
        assert info.value.exit_code == 125
