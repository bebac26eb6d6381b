"""RUN --mount parsing with BuildKit's rules: nothing written is silently ignored."""

from __future__ import annotations

import pytest

from pybuild.builder.runmounts import parse_mount, parse_mounts, raw_from


def test_defaults_per_type() -> None:
    bind = parse_mount("target=/src")
    assert (bind.type, bind.readonly, bind.target) == ("bind", True, "/src")
    cache = parse_mount("type=cache,target=cache", "/work")
    assert (cache.readonly, cache.target, cache.id) == (False, "/work/cache", "cache")
    tmpfs = parse_mount("type=tmpfs,target=/t,size=64m")
    assert (tmpfs.readonly, tmpfs.size) == (False, 64 << 20)
    secret = parse_mount("type=secret,id=tok,required")
    assert (secret.target, secret.required, secret.readonly) == ("/run/secrets/tok", True, True)
    assert parse_mount("type=secret,target=/etc/key").id == "key"
    assert parse_mount("type=secret,source=npmrc").id == "npmrc"
    assert parse_mount("type=secret,id=tok,env=TOKEN").target == ""
    assert parse_mount("target=/src,rw").readonly is False
    assert parse_mount("target=/src,ro=false").readonly is False
    assert parse_mount("target=/src,type=cache").type == "cache"  # type= may come last


@pytest.mark.parametrize(("text", "message"), [
    ("target=/x,bind-propagation=rshared", "unexpected key 'bind-propagation'"),
    ("target=/x,sorce=a", "unexpected key 'sorce' in 'sorce=a' (did you mean source?)"),
    ("target=/x,size=1m", "unexpected key 'size' for mount type 'bind'"),
    ("type=cache,target=/x,required", "unexpected key 'required' for mount type 'cache'"),
    ("target=/x,mode=0700", "mode not allowed for 'bind' type mounts"),
    ("type=tmpfs,target=/x,uid=1", "uid not allowed for 'tmpfs' type mounts"),
    ("target=/x,sharing=locked", "invalid cache sharing set for bind mount"),
    ("type=cache,target=/x,sharing=nope", "unsupported sharing value 'nope'"),
    ("target=/x,z", "invalid field 'z' must be a key=value pair"),
    ("target=/x,ro=maybe", "invalid value for ro: maybe"),
    ("type=secret,id=a,from=stage", "secret mount should not have a from"),
    ("type=secret,id=a,source=b", "both source and id can't be set"),
    ("type=secret", "invalid secret mount. one of source, target required"),
    ("type=nfs,target=/x", "unsupported mount type 'nfs'"),
    ("type=ssh,source=/x", "ssh does not support source"),
    ("type=ssh,from=stage", "an ssh mount has no source"),
    ("type=ssh,size=1m", "unexpected key 'size' for mount type 'ssh'"),
    ("type=bind", "a bind mount needs target="),
    ("target=.", "invalid mount target '/'"),
    ("type=cache,target=/x,mode=9", "invalid value '9' for mode"),
])
def test_bad_mounts_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_mount(text)
    assert message in str(info.value)


def test_ssh_mounts_default_as_buildkits() -> None:
    ssh = parse_mount("type=ssh")
    assert (ssh.id, ssh.target, ssh.required, ssh.mode, ssh.uid) == ("default", "", False, None, None)
    full = parse_mount("type=ssh,id=gh,target=/agent,required,mode=0644,uid=1000,gid=1000")
    assert (full.id, full.target, full.required, full.mode, full.uid, full.gid) == \
        ("gh", "/agent", True, 0o644, 1000, 1000)
    # BuildKit's targets: /run/buildkit/ssh_agent.N, N counting every ssh mount of the step
    first, cache, second, third = parse_mounts(["type=ssh", "type=cache,target=/c", "type=ssh,target=/s",
                                                "type=ssh,id=other"])
    assert (first.target, second.target, third.target) == ("/run/buildkit/ssh_agent.0", "/s",
                                                             "/run/buildkit/ssh_agent.2")


def test_from_is_never_expanded() -> None:
    assert raw_from("type=bind,from=build,target=/x") == "build"
    assert raw_from("type=bind,target=/x") is None
    assert raw_from("from=stage$,target=/x") == "stage$"  # a $ at the end is a literal
    with pytest.raises(ValueError, match="doesn't support variable expansion"):
        raw_from("from=$STAGE,target=/x")
