"""One RUN step: the command, its mounts, and running it in a container over a new layer.

The container's rootfs is the step's snapshot (upper) over an init dir with
the build's ``/etc/hosts``, ``/etc/resolv.conf`` and ``/etc/hostname`` and
the parent chain (lowers); the overlay is mounted inside the container's own
mount namespace, so nothing stays mounted if the build dies. What the command
writes lands in the snapshot's ``diff/``, which the caller commits.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import posixpath
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pybuild.errors import BuildError, PybuildError
from pybuild.linux.fsutil import remove_tree
from pybuild.records import record
from pybuild.store.layers import Snapshot

from .checksum import checksum_sources
from .copy import make_dirs
from .imageconfig import DEFAULT_SHELL
from .instructions import Run
from .plan import PROXY_ARGS
from .progress import BuildOutput, OutputPump
from .runmounts import MountSpec, SecretSource, parse_mounts, raw_from
from .runsettings import RunSettings
from .snapshots import readonly_view, remove_mount_stubs, writable_view
from .sshagent import SshSource
from .state import State

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from pybuild.runtime.cgroups import Limits
    from pybuild.runtime.spec import Mount
    from pybuild.store.root import Store

    from .checksum import ChecksumCache
    from .context import SourceTree
    from .contextview import ContextView

SCRIPT_DIR = "/dev/pipes"
BUILD_HOSTNAME = "pybuild"


@record(frozen=True)
class RunContext:
    """What a RUN step needs from the build around it, and nothing more (BuildKit's dispatch state/options).

    The callables are the build's services: the builder passes its own
    methods, so a step never reaches into the builder or its stage.
    """

    store: Store
    context: SourceTree  # the build context, for the content keys of bind mounts from it
    context_view: ContextView  # what such a mount shows: the context filtered by .dockerignore
    network: str  # the build's --network
    secrets: Mapping[str, SecretSource]
    ssh: Mapping[str, SshSource]  # --ssh: the agents RUN --mount=type=ssh may forward, by id
    build_args: Mapping[str, str]  # --build-arg values (the proxy ones reach the command)
    stage_args: Mapping[str, str]  # the ARGs of this stage, with their values
    escape: str
    limits: Limits | None
    settings: RunSettings  # --add-host (in the init layer), --ulimit, --shm-size
    scratch: Path
    output: BuildOutput
    checksum_memo: Callable[[], ChecksumCache]
    chain_of: Callable[[str, Run], str | None]  # a mount's from= (stage or image) -> its top chain id
    # a mount's from= naming a directory context (--build-context NAME=DIR) -> (its tree, its view), else None
    named_dir: Callable[[str], tuple[SourceTree, ContextView] | None]
    init_layer: Callable[[], str]
    bridge_netns: Callable[[], str]
    track: Callable[[Any, bool], None]  # a step's process started (True) or ended (False)
    check_cancel: Callable[[], None]


class RunStep:
    def __init__(self, ctx: RunContext, state: State, instr: Run, env: Mapping[str, str]) -> None:
        self.ctx = ctx
        self.state = state
        self.instr = instr
        config = state.config.config
        self.shell = tuple(config.shell or DEFAULT_SHELL)
        self.script: tuple[str, str] | None = None  # (file name, content) of a heredoc script with #!
        self.argv = self._argv()
        try:
            for text in instr.mounts:
                raw_from(text)  # from= is never expanded (BuildKit): a $ in it is an error
        except ValueError as exc:
            raise _located(instr, f"invalid RUN --mount: {exc}") from None
        try:
            self.mounts = parse_mounts([_expand(m, env, ctx.escape) for m in instr.mounts],
                                       config.working_dir or "/")
        except PybuildError as exc:
            raise _located(instr, exc.message) from None
        # "default" (or no --network) is the build's own network; the build's default is the
        # bridge, as for containers (Docker's builder does the same)
        network = instr.network if instr.network not in (None, "", "default") else ctx.network
        self.network = "bridge" if network in (None, "", "default") else network
        # "sandbox" is the default isolation: the same step (and key) as no --security at all
        self.security: str | None = "insecure" if instr.security == "insecure" else None
        for m in self.mounts:
            if m.type == "secret" and m.required and m.id not in ctx.secrets:
                # before the cache is asked: a cached result is no excuse for a missing required secret
                raise _located(instr, f"secret {m.id} is required but was not given",
                               f"pass --secret id={m.id},src=FILE")
            if m.type == "ssh" and m.required and m.id not in ctx.ssh:
                raise _located(instr, f"ssh agent {m.id} is required but was not given",
                               f"pass --ssh {m.id}" + ("" if m.id == "default" else "=SOCKET"))
        self.mount_keys = [self._mount_key(m) for m in self.mounts]
        self.text = _describe(instr)

    # ---- the command ----------------------------------------------------------------------------

    def _argv(self) -> tuple[str, ...]:
        instr = self.instr
        if not instr.prepend_shell:
            assert isinstance(instr.command, list)
            return tuple(instr.command)
        assert isinstance(instr.command, str)
        command = instr.command
        if instr.heredocs:
            only = instr.heredocs[0]
            if len(instr.heredocs) == 1 and command.strip() in (f"<<{only.name}", f"<<-{only.name}",
                                                                  f"<<'{only.name}'", f'<<"{only.name}"',
                                                                  f"<<-'{only.name}'", f'<<-"{only.name}"'):
                if only.content.startswith("#!"):
                    name = hashlib.sha256(only.content.encode()).hexdigest()[:16]
                    self.script = (name, only.content)
                    return (f"{SCRIPT_DIR}/{name}",)
                return (*self.shell, only.content)
            # the shell reads the heredocs itself
            body = "".join(f"{d.content}{d.name}\n" for d in instr.heredocs)
            command = f"{command}\n{body}"
        return (*self.shell, command)

    def history_text(self, args: dict[str, str]) -> str:
        prefix = f"|{len(args)} " + " ".join(f"{k}={v}" for k, v in args.items()) + " " if args else ""
        return f"RUN {prefix}{' '.join(self.argv)} # pybuild"

    def process_env(self) -> tuple[str, ...]:
        config = self.state.config.config
        env = list(config.env)
        names = {e.partition("=")[0] for e in env}
        extra = {**{k: v for k, v in self.ctx.build_args.items() if k in PROXY_ARGS}, **self.ctx.stage_args}
        for key, value in extra.items():
            if key not in names:
                env.append(f"{key}={value}")
        for m in self.mounts:
            if m.type == "secret" and m.env:
                env.append(f"{m.env}={self._secret(m).decode(errors='replace')}")
        agents = [m for m in self.mounts if m.type == "ssh"]
        if agents and "SSH_AUTH_SOCK" not in names:  # BuildKit: the first ssh mount, unless the image sets one
            env.append(f"SSH_AUTH_SOCK={agents[0].target}")
        return tuple(env)

    # ---- mounts -----------------------------------------------------------------------------------

    def _mount_key(self, m: MountSpec) -> str:
        key = m.canonical()
        named = self._named(m)
        if m.type in ("bind", "cache") and named is not None:
            key += f",content={self._content_digest(named[0], m.source or '.')}"
        elif m.type == "bind" and m.source_from is None:
            key += f",content={self._content_digest(self.ctx.context, m.source or '.')}"
        elif m.type in ("bind", "cache") and m.source_from is not None:
            key += f",chain={self._from_chain(m) or ''}"
        return key

    def _content_digest(self, tree: SourceTree, source: str) -> str:
        try:
            return checksum_sources(tree, [source], cache=self.ctx.checksum_memo(), keyword="RUN --mount")
        except BuildError as exc:
            raise _located(self.instr, exc.message, exc.hint) from None

    def _named(self, m: MountSpec) -> tuple[SourceTree, ContextView] | None:
        """The directory context (``--build-context``) a mount's from= names, or None."""
        if m.source_from is None or m.type not in ("bind", "cache"):
            return None
        return self.ctx.named_dir(m.source_from)

    def _from_chain(self, m: MountSpec) -> str | None:
        assert m.source_from is not None
        return self.ctx.chain_of(m.source_from, self.instr)

    def _secret(self, m: MountSpec) -> bytes:
        source = self.ctx.secrets.get(m.id)
        if source is None:
            if m.required:
                raise _located(self.instr, f"secret {m.id} is required but was not given",
                               f"pass --secret id={m.id},src=FILE")
            return b""
        return source.read()

    @contextlib.contextmanager
    def _runtime_mounts(self, scratch: Path) -> Iterator[list[Mount]]:
        from pybuild.runtime.spec import Mount

        mounts: list[Mount] = []
        with contextlib.ExitStack() as stack:
            for m in self.mounts:
                if m.type == "tmpfs":
                    opts = ("nosuid", "nodev") + ((f"size={m.size}",) if m.size else ())
                    mounts.append(Mount("tmpfs", m.target, "tmpfs", opts))
                elif m.type == "cache":
                    mounts.append(Mount.bind(str(stack.enter_context(self._cache_dir(m, scratch))), m.target,
                                             readonly=False))
                elif m.type == "ssh":
                    agent = self.ctx.ssh.get(m.id)
                    if agent is None:
                        continue  # an optional agent that was not given: nothing is mounted
                    from .sshagent import AgentProxy

                    sock = scratch / f"ssh-{len(mounts)}.sock"
                    stack.enter_context(AgentProxy(agent.socket, sock, uid=m.uid or 0, gid=m.gid or 0,
                                                   mode=m.mode if m.mode is not None else 0o600))
                    mounts.append(Mount.bind(str(sock), m.target, readonly=True))
                elif m.type == "secret":
                    if not m.target:
                        continue
                    if m.id not in self.ctx.secrets and not m.required:
                        continue  # an optional secret that was not given: nothing is mounted
                    path = scratch / f"secret-{hashlib.sha256(m.id.encode()).hexdigest()[:16]}"
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
                    with os.fdopen(fd, "wb") as f:
                        f.write(self._secret(m))
                    os.chown(path, m.uid or 0, m.gid or 0)
                    os.chmod(path, m.mode if m.mode is not None else 0o400)
                    mounts.append(Mount.bind(str(path), m.target, readonly=True))
                else:  # bind
                    source = self._bind_source(m, scratch, stack)
                    mounts.append(Mount.bind(source, m.target, readonly=m.readonly))
            if self.script is not None:
                name, content = self.script
                path = scratch / f"script-{name}"
                path.write_text(content)
                os.chmod(path, 0o755)
                mounts.append(Mount.bind(str(path), f"{SCRIPT_DIR}/{name}", readonly=True))
            yield mounts

    def _bind_source(self, m: MountSpec, scratch: Path, stack: contextlib.ExitStack) -> str:
        """The host path a bind mount shows; a ``rw`` one over a copy-on-write view, thrown away with the step.

        From the context: its view filtered by .dockerignore (``contextview``),
        so that an excluded path is not there, as in BuildKit's transferred
        context. From a stage or image: its layers mounted in the build's
        namespace.
        """
        from pybuild.runtime.rootfs import secure_join

        named = self._named(m)
        try:
            if m.source_from is None or named is not None:
                view = self.ctx.context_view if named is None else named[1]
                root = view.root() if m.readonly else stack.enter_context(view.writable(scratch))
            else:
                chain = self._from_chain(m)
                layers = self.ctx.store.layers
                mounted = readonly_view(layers, chain, scratch) if m.readonly else writable_view(layers, chain, scratch)
                root = str(stack.enter_context(mounted))
        except BuildError as exc:
            raise _located(self.instr, exc.message, exc.hint) from None
        source: str = secure_join(root, m.source or "/")
        if not os.path.exists(source):
            raise _located(self.instr, f"RUN --mount: source {m.source or '/'} not found"
                                       + (f" in {m.source_from}" if m.source_from else
                                          " in the build context or excluded by .dockerignore"))
        return source

    def _cache_identity(self, m: MountSpec) -> tuple[str, str | None]:
        """The name of a cache mount's directory, and the chain that seeds it (``from=``).

        A cache with ``from=`` starts as a copy of ``source`` in that stage or
        image; as in BuildKit, a different source content is a different
        cache, so the chain id and the path are part of the name.
        """
        if m.source_from is None:
            return hashlib.sha256(m.id.encode()).hexdigest()[:32], None
        source = posixpath.normpath(posixpath.join("/", m.source or "/"))
        named = self._named(m)
        if named is not None:  # a directory context: its content is its identity
            digest = self._content_digest(named[0], m.source or ".")
            return hashlib.sha256(f"{m.id}\0context={digest}\0source={source}".encode()).hexdigest()[:32], None
        chain = self._from_chain(m)
        identity = f"{m.id}\0from={chain or 'empty'}\0source={source}"
        return hashlib.sha256(identity.encode()).hexdigest()[:32], chain

    @contextlib.contextmanager
    def _cache_dir(self, m: MountSpec, scratch: Path) -> Iterator[Path]:
        base = self.ctx.store.root / "buildcache" / "mounts"
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        name, seed_chain = self._cache_identity(m)
        path = base / name
        if not path.exists():
            tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=base))
            try:
                if m.source_from is not None:
                    self._seed_cache(m, seed_chain, tmp, scratch)
                else:
                    os.chmod(tmp, m.mode if m.mode is not None else 0o755)
                    os.chown(tmp, m.uid or 0, m.gid or 0)
                os.rename(tmp, path)
            except OSError:
                if not path.exists():
                    raise
                remove_tree(tmp)  # another build made it first
            except BaseException:
                remove_tree(tmp)
                raise
        mounted = path
        if m.source_from is None and posixpath.normpath("/" + (m.source or "")) != "/":
            # no from=: source= is a directory inside the cache, as BuildKit's selector
            mounted = Path(make_dirs(path, m.source))
        if m.sharing != "locked":
            yield mounted
            return
        fd = os.open(base / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield mounted
        finally:
            os.close(fd)

    def _seed_cache(self, m: MountSpec, chain: str | None, into: Path, scratch: Path) -> None:
        """Fill a new cache dir with ``source`` of the ``from=`` stage or image, owners and modes kept."""
        from pybuild.runtime.rootfs import secure_join

        from .context import SourceTree
        from .copy import copy_sources

        source = m.source or "/"
        where = f"RUN --mount=type=cache,from={m.source_from}"
        named = self._named(m)
        seed_view: contextlib.AbstractContextManager[str | Path] = (
            contextlib.nullcontext(named[1].root()) if named is not None
            else readonly_view(self.ctx.store.layers, chain, scratch))
        with seed_view as root:
            try:
                st = os.stat(secure_join(str(root), source))
            except OSError:
                raise _located(self.instr, f"{where}: source {source} not found in {m.source_from}") from None
            if not stat.S_ISDIR(st.st_mode):
                raise _located(self.instr, f"{where}: source {source} in {m.source_from} is not a directory")
            try:
                copy_sources(into, [source], "/", tree=SourceTree(root, where=m.source_from),
                             preserve_owner=True, scratch_dir=scratch)
            except BuildError as exc:
                raise _located(self.instr, f"{where}: {exc.message}", exc.hint) from None
        os.chmod(into, m.mode if m.mode is not None else stat.S_IMODE(st.st_mode))
        os.chown(into, m.uid if m.uid is not None else st.st_uid, m.gid if m.gid is not None else st.st_gid)

    # ---- running --------------------------------------------------------------------------------

    def _isolation(self) -> dict[str, Any]:
        """The container's security fields: Docker's defaults, or ``--security=insecure``'s privileged set.

        BuildKit's insecure mode is ``docker run --privileged``: every
        capability, no seccomp filter, an allow-all device cgroup with the
        host's device nodes, no masked or read-only /proc paths, /sys
        writable. The entitlement was checked before the build started.
        """
        if self.security != "insecure":
            return {}
        from pybuild.runtime.security import isolation

        fields = isolation(privileged=True, host_network=self.network == "host").spec_fields()
        return {k: fields[k] for k in ("capabilities", "seccomp", "masked_paths", "readonly_paths", "device_rules",
                                       "devices", "writable_sysfs")}

    def execute(self, snap: Snapshot, label: str) -> None:
        from pybuild.runtime.run import execute
        from pybuild.runtime.spec import DEFAULT_SHM_SIZE, ContainerSpec, OverlayRootfs, ProcessSpec

        layers = self.ctx.store.layers
        init = self.ctx.init_layer()
        lowers = (init, *layers.lowers(snap.cache_id))
        config = self.state.config.config
        cwd = config.working_dir or "/"
        scratch = Path(tempfile.mkdtemp(prefix="run-", dir=self.ctx.scratch))
        try:
            with contextlib.ExitStack() as stack:
                mounts = stack.enter_context(self._runtime_mounts(scratch))
                snap.merged_dir.mkdir(mode=0o700, exist_ok=True)
                settings = self.ctx.settings
                process = ProcessSpec(args=self.argv, env=self.process_env(), cwd=cwd, user=config.user,
                                      rlimits=settings.ulimits)
                netns = None
                if self.network == "bridge":
                    netns = self.ctx.bridge_netns()
                spec = ContainerSpec(
                    rootfs=snap.merged_dir, process=process, hostname=BUILD_HOSTNAME,
                    network="none" if netns else self.network, netns=netns, mounts=tuple(mounts),
                    overlay=OverlayRootfs(layers.overlay, lowers, f"{snap.cache_id}/diff", f"{snap.cache_id}/work"),
                    shm_size=settings.shm_size if settings.shm_size is not None else DEFAULT_SHM_SIZE,
                    **self._isolation())
                pump = OutputPump(self.ctx.output, label)
                started: list[object] = []

                def on_started(proc: object, _cg: object) -> None:
                    started.append(proc)
                    self.ctx.track(proc, True)

                try:
                    cgroup = f"pybuild/{build_cgroup_prefix(self.ctx.store.root)}{snap.cache_id[:12]}"
                    result = execute(spec, cgroup_name=cgroup, limits=self.ctx.limits, stdout=pump.write_fd,
                                     stderr=pump.write_fd, on_started=on_started, proxy_signals=False,
                                     seccomp_cache=self.ctx.store.root / "seccomp")
                except PybuildError as exc:
                    raise _located(self.instr, f"RUN failed: {exc}") from None
                finally:
                    pump.finish()
                    for proc in started:
                        self.ctx.track(proc, False)
            if result.exit_code != 0:
                self.ctx.check_cancel()
                from pybuild.runtime.run import oom_message

                detail = f"exit code: {result.exit_code}"
                if result.oom_killed:
                    detail = oom_message(result.memory_limit).replace("container killed", "killed")
                elif result.status.signal:
                    detail = f"killed by signal {result.status.signal}"
                lines = list(pump.tail)[-10:]
                tail = "\n".join(["last output:", *(f"  {line}" for line in lines)]) if lines else ""
                shown = json.dumps(list(self.argv)) if not self.instr.prepend_shell else " ".join(self.argv)
                raise _located(self.instr, f'process "{shown}" did not complete successfully: {detail}'
                               + (f"\n{tail}" if tail else ""))
        finally:
            with contextlib.suppress(OSError):  # what the step wrote there may be of any depth: iterative
                remove_tree(scratch)
            with contextlib.suppress(OSError):
                snap.merged_dir.rmdir()
        targets = [m.target for m in self.mounts if m.target]
        if self.script is not None:
            targets.append(f"{SCRIPT_DIR}/{self.script[0]}")
        remove_mount_stubs(snap.diff_dir, layers.overlay, [init, *layers.lowers(snap.cache_id)], targets)

def build_cgroup_prefix(store_root: Path) -> str:
    """RUN cgroups are ``pybuild/build-<store tag>-<snapshot>``: whose build made one is visible."""
    return f"build-{hashlib.sha256(str(store_root).encode()).hexdigest()[:8]}-"


def _expand(word: str, env: Mapping[str, str], escape: str) -> str:
    from . import shellwords

    return shellwords.expand(word, env, escape)


def _describe(instr: Run) -> str:
    flags = [f"--mount={m}" for m in instr.mounts]
    if instr.network:
        flags.append(f"--network={instr.network}")
    if instr.security:
        flags.append(f"--security={instr.security}")
    command = instr.command if isinstance(instr.command, str) else json.dumps(instr.command)
    return " ".join(["RUN", *flags, command])


def _located(instr: Run, message: str, hint: str | None = None) -> PybuildError:
    from pybuild.errors import DockerfileError

    return DockerfileError(message, hint, filename=instr.meta.filename, line=instr.line,
                           source_line=instr.meta.source_line or None)

