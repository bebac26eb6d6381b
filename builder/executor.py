"""Building a planned Dockerfile: stages in dependency order, steps through the cache.

Every step turns a :class:`State` (image config + layer descriptors + cache
key) into the next. A step's key is looked up in the store's build cache; a
hit reuses the recorded state without running anything. On a miss:

* metadata steps (ENV, LABEL, CMD...) change the config only;
* WORKDIR also creates the directory when the image lacks it;
* COPY/ADD write into a new layer mounted over the parent chain;
* RUN runs the command in a container (the runtime) whose rootfs is a new
  layer over the parent chain, and commits what it wrote.

Stages that do not depend on each other run at the same time (``jobs``).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import secrets
import threading
import time
from collections import ChainMap
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pybuild import records
from pybuild.errors import BuildError, DockerfileError, ImageNotFound, PybuildError, TooManyLayers
from pybuild.records import field, record
from pybuild.store import digest as _digest
from pybuild.store import reference as _reference
from pybuild.store.buildcache import CacheRecord, SlotInputs
from pybuild.store.images import Image, now_iso
from pybuild.store.layers import Snapshot
from pybuild.store.lowerview import is_dir_below
from pybuild.store.model import ContainerConfig, HistoryEntry, ImageConfig, Platform
from pybuild.store.root import ScratchDir, Store

from . import cachekey, entitlements, imageconfig
from .checksum import ChecksumCache, checksum_sources
from .context import Context, SourceTree
from .contextview import ContextView
from .copy import Download, copy_instruction, download, heredoc_sources, is_url, make_dirs, resolve_chown
from .imageconfig import ConfigDraft
from .instructions import (
    Add,
    Arg,
    Cmd,
    Copy,
    Env,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Workdir,
)
from .lexer import lex
from .namedcontext import NamedContextSpec
from .namedcontext import lookup as lookup_context
from .parse import parse_instruction
from .plan import PROXY_ARGS, BuildPlan, PlannedStage, make_plan
from .progress import BuildOutput
from .runmounts import SecretSource
from .runsettings import RunSettings, hosts_text
from .runstep import BUILD_HOSTNAME, RunContext, RunStep
from .snapshots import chain_lowers, readonly_view, writable_snapshot
from .sshagent import SshSource
from .state import State

DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@record
class BuildOptions:
    context: Context
    tags: list[_reference.Reference] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    pull: bool = False
    jobs: int = 0
    network: str = "default"
    secrets: dict[str, SecretSource] = field(default_factory=dict)
    ssh: dict[str, SshSource] = field(default_factory=dict)  # --ssh: agents for RUN --mount=type=ssh
    labels: dict[str, str] = field(default_factory=dict)
    dockerfile_text: str | None = None
    dockerfile_name: str = "Dockerfile"
    limits: Any = None  # runtime.cgroups.Limits for RUN steps (--memory, --cpus, --pids-limit)
    allow: frozenset[str] = frozenset()  # entitlements the build consents to (--allow): see entitlements.py
    run_settings: RunSettings = field(default_factory=RunSettings)  # --add-host, --ulimit, --shm-size
    named_contexts: dict[str, NamedContextSpec] = field(default_factory=dict)  # --build-context, by normalised name


@record
class BuildStats:
    steps: int = 0
    cached: int = 0
    executed: int = 0
    runs: int = 0
    misses: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # cache records this build used or wrote (for --cache-to)


@record(frozen=True)
class BuildResult:
    image: Image
    stats: BuildStats


class _Cancelled(BaseException):
    """Another stage failed or the user interrupted: stop this stage now."""


# numbered in the output (BuildKit numbers the steps that touch the filesystem)
_FS_STEPS = (Run, Copy, Add, Workdir)


class Builder:
    def __init__(self, store: Store, options: BuildOptions, output: BuildOutput | None = None) -> None:
        self.store = store
        self.opts = options
        self.out = output or BuildOutput()
        self.stats = BuildStats()
        self._stats_lock = threading.Lock()
        self._cancel = threading.Event()
        self._running: set[Any] = set()  # container processes, killed on cancel
        self._running_lock = threading.Lock()
        self._pull_lock = threading.Lock()
        self._scratch: ScratchDir | None = None
        self._context_view: ContextView | None = None
        self._named_trees: dict[str, Context] = {}  # the directory named contexts, opened once
        self._named_views: dict[str, ContextView] = {}  # what RUN --mount=from= such a context shows
        self._init_snap: Snapshot | None = None
        self._init_lock = threading.Lock()
        self._network: tuple[Any, Any, str] | None = None  # (NetworkManager, Attachment, endpoint id)
        self._epoch = _source_date_epoch()
        self.plan: BuildPlan | None = None
        self._dockerfile_id = ""
        self.stage_causes: dict[int, str | None] = {}  # why each stage built differs from last time

    # ---- entry point ------------------------------------------------------------------

    def build(self) -> BuildResult:
        from .parse import parse_dockerfile

        text = self.opts.dockerfile_text
        if text is None:
            text = self.opts.context.read_dockerfile()
        dockerfile = parse_dockerfile(text, filename=self.opts.dockerfile_name)
        self.plan = plan = make_plan(dockerfile, self.opts.build_args, self.opts.target, self.opts.named_contexts)
        entitlements.check_plan(plan, self.allowed())  # before anything runs, as BuildKit refuses at solve time
        self._dockerfile_id = _digest.of_bytes(
            f"{self.opts.context.root}\0{self.opts.dockerfile_name}\0{plan.target}".encode())
        with self.store.writing():
            # owned (a lock file beside it) so that a killed build's dir, secrets and all, is removed
            # by the next command that opens the store
            self._scratch = self.store.build_scratch()
            self._context_view = ContextView(self.opts.context, self._scratch.path)
            try:
                for spec in self.opts.named_contexts.values():
                    if spec.kind == "dir":  # its own .dockerignore, read now
                        self._named_trees[spec.name] = Context.from_dir(spec.value, "-")
                states = self._run_stages(plan)
                final = states[plan.target]
                image = self._write_image(final)
            finally:
                self._cleanup()
        self._warn_unused_args(plan)
        return BuildResult(image, self.stats)

    def allowed(self) -> frozenset[str]:
        """The entitlements the build consents to: ``--allow``, and ``network.host`` with ``--network host``."""
        if self.opts.network == "host":
            return self.opts.allow | {entitlements.NETWORK_HOST}
        return frozenset(self.opts.allow)

    def cancel(self) -> None:
        self._cancel.set()
        with self._running_lock:
            for proc in list(self._running):
                with contextlib.suppress(Exception):
                    proc.kill()

    def bridge_netns(self) -> str:
        """The network namespace RUN steps on the bridge share, made on first use.

        One endpoint per build (BuildKit keeps a pool of them too): a veth, an
        address and the NAT rules cost some 200 ms, too much for every step.
        """
        with self._init_lock:
            if self._network is None:
                from pybuild.runtime.network.manager import open_manager

                manager = open_manager(self.store.root)
                hosts = self.scratch / "hosts"
                hosts.write_text("")
                step_id = "build" + secrets.token_hex(16)
                attachment = manager.attach(container_id=step_id, name="pybuild-build", hostname=BUILD_HOSTNAME,
                                            network="bridge", ports=(), add_hosts=(), hosts_path=hosts)
                self._network = (manager, attachment, step_id)
            return str(self._network[1].endpoint.netns)

    def _cleanup(self) -> None:
        """Undo the build's shared pieces; each is undone even when undoing another failed."""
        with contextlib.ExitStack() as undo:
            if self._scratch is not None:
                scratch = self._scratch
                self._scratch = None

                def remove_scratch() -> None:
                    with contextlib.suppress(OSError):  # released anyway: the next command removes it
                        scratch.remove()

                undo.callback(remove_scratch)
            if self._context_view is not None:
                undo.callback(self._context_view.close)  # before the scratch dir it is in goes
                self._context_view = None
            for view in self._named_views.values():
                undo.callback(view.close)
            self._named_views = {}
            if self._init_snap is not None:
                snap = self._init_snap
                self._init_snap = None

                def discard_init() -> None:
                    with contextlib.suppress(Exception):  # an abandoned snapshot is cleaned up later anyway
                        self.store.layers.discard(snap)

                undo.callback(discard_init)
            if self._network is not None:
                manager, attachment, step_id = self._network
                self._network = None
                undo.callback(manager.release, step_id)
                undo.callback(attachment.detach)

    def _warn_unused_args(self, plan: BuildPlan) -> None:
        declared = set(plan.global_args)
        for stage in plan.dockerfile.stages:
            for instr in stage.instructions:
                if isinstance(instr, Arg):
                    declared.update(instr.names)
        unused = sorted(a for a in self.opts.build_args if a not in declared and a not in PROXY_ARGS)
        if unused:
            # Docker prints Go's form of a list of strings: [A B]
            self.out.line(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed")

    # ---- stages ---------------------------------------------------------------------------

    def _run_stages(self, plan: BuildPlan) -> dict[int, State]:
        jobs = self.opts.jobs or os.cpu_count() or 1
        futures: dict[int, Future[State]] = {}
        if jobs <= 1 or len(plan.needed) == 1:
            states: dict[int, State] = {}
            for index in plan.needed:
                states[index] = self._build_stage(plan.stages[index], states)
            return states
        results: dict[int, State] = {}
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="stage") as pool:
            for index in plan.needed:  # dependencies first: a worker never waits on an unscheduled stage
                futures[index] = pool.submit(self._build_stage_waiting, plan.stages[index], futures)
            try:
                first_error: BaseException | None = None
                for index, fut in futures.items():
                    try:
                        results[index] = fut.result()
                    except BaseException as exc:  # noqa: BLE001 - the first real failure is reported
                        if first_error is None or isinstance(first_error, _Cancelled):
                            first_error = exc
                        self.cancel()
                if first_error is not None:
                    raise first_error
            except KeyboardInterrupt:
                self.cancel()
                raise
        return results

    def _build_stage_waiting(self, planned: PlannedStage, futures: Mapping[int, Future[State]]) -> State:
        deps = {i: futures[i].result() for i in sorted(planned.deps)}
        return self._build_stage(planned, deps)

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise _Cancelled()

    def _build_stage(self, planned: PlannedStage, deps: Mapping[int, State]) -> State:
        assert self.plan is not None
        run = _StageRun(self, planned, deps)
        return run.execute()

    # ---- base images -----------------------------------------------------------------------

    def base_image(self, name: str, instr: Instruction) -> Image:
        """A FROM (or --from) image from the store, pulled when missing (or with --pull)."""
        with self._pull_lock:
            if not self.opts.pull:
                try:
                    return self.store.images.resolve(name)
                except ImageNotFound:
                    pass
            try:
                ref = _reference.parse(name)
            except PybuildError as exc:
                raise _located(instr, f"invalid base image {name!r}: {exc.message}") from None
            from pybuild.registry.pull import pull_image

            self.out.line(f"pulling {ref.familiar()}")
            try:
                return pull_image(self.store, ref)
            except PybuildError as exc:
                if not self.opts.pull:
                    raise _located(instr, f"base image {ref.familiar()} is not in the store and could not be "
                                          f"pulled: {exc}") from None
                try:
                    return self.store.images.resolve(name)
                except ImageNotFound:
                    raise _located(instr, str(exc)) from None

    # ---- shared pieces ---------------------------------------------------------------------

    @property
    def scratch(self) -> Path:
        assert self._scratch is not None
        return self._scratch.path

    @property
    def context_view(self) -> ContextView:
        assert self._context_view is not None
        return self._context_view

    def init_layer(self) -> str:
        """The dir (relative to the overlay root) with /etc/hosts, resolv.conf, hostname for RUN steps."""
        with self._init_lock:
            if self._init_snap is None:
                from pybuild.runtime import initlayer

                add_hosts = self.opts.run_settings.add_hosts
                # /etc/hosts as BuildKit's whatever the network (with --add-host's lines); resolv.conf by the
                # rule containers follow
                hosts = hosts_text(initlayer.default_hosts(BUILD_HOSTNAME), add_hosts,
                                   self._host_gateway() if any(h.endswith(":host-gateway") for h in add_hosts)
                                   else None)
                snap = self.store.layers.create(None)
                initlayer.write(snap.diff_dir, hostname=BUILD_HOSTNAME, hosts=hosts,
                                resolv_conf=initlayer.resolv_conf(self.opts.network))
                self._init_snap = snap
            return f"{self._init_snap.cache_id}/diff"

    def _host_gateway(self) -> str:
        """``host-gateway``: the gateway of the store's default bridge (Docker's: its default bridge's address)."""
        from pybuild.runtime.network.manager import open_manager

        try:
            return str(open_manager(self.store.root).get_network("bridge").gateway)
        except PybuildError as exc:
            raise BuildError(f"--add-host: cannot resolve host-gateway: {exc}") from None

    def named_context(self, name: str) -> NamedContextSpec | None:
        """The named context (``--build-context``) a ``--from``/``from=`` that is no stage names, or None."""
        return lookup_context(self.opts.named_contexts, name)

    def named_tree(self, name: str) -> Context:
        """The opened directory of the named context ``name`` (normalised)."""
        return self._named_trees[name]

    def named_view(self, name: str) -> ContextView:
        """What ``RUN --mount=from=NAME`` shows of a directory context: its files less its .dockerignore."""
        with self._init_lock:
            view = self._named_views.get(name)
            if view is None:
                view = self._named_views[name] = ContextView(self._named_trees[name], self.scratch)
            return view

    def track(self, proc: Any, add: bool) -> None:
        with self._running_lock:
            if add:
                self._running.add(proc)
                if self._cancel.is_set():
                    proc.kill()
            else:
                self._running.discard(proc)

    def count(self, cached: bool, miss_reason: str | None = None, run: bool = False) -> None:
        with self._stats_lock:
            self.stats.steps += 1
            if cached:
                self.stats.cached += 1
            else:
                self.stats.executed += 1
                if run:
                    self.stats.runs += 1
            if miss_reason is not None:
                self.stats.misses.append(miss_reason)

    def used(self, key: str) -> None:
        with self._stats_lock:
            self.stats.keys.append(key)

    def now(self) -> str:
        if self._epoch is not None:
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._epoch))
        return str(now_iso())

    def dockerfile_id(self) -> str:
        return self._dockerfile_id

    # ---- the result -------------------------------------------------------------------------

    def _write_image(self, final: State) -> Image:
        config = final.config
        if self.opts.labels:
            config = records.replace(config, config=records.replace(
                config.config, labels={**config.config.labels, **self.opts.labels}))
        created = config.history[-1].created if config.history else self.now()
        config = records.replace(config, created=created)
        image = self.store.images.create(config, list(final.layers))
        for ref in self.opts.tags:
            self.store.images.tag(ref, image.manifest_digest)
        return image


def _located(instr: Instruction, message: str, hint: str | None = None) -> DockerfileError:
    return DockerfileError(message, hint, filename=instr.meta.filename, line=instr.line,
                           source_line=instr.meta.source_line or None)


def _source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    return int(value) if value.isdigit() else None


def describe(instr: Instruction) -> str:
    """The step as history and output show it (variables expanded)."""
    import json

    if isinstance(instr, Run):
        if isinstance(instr.command, str):
            return f"RUN {instr.command}"
        return "RUN " + json.dumps(instr.command)
    if isinstance(instr, Env | Label):
        return f"{instr.keyword} " + " ".join(f"{k}={v}" for k, v in instr.pairs)
    return instr.original.strip() if instr.original else type(instr).keyword


class _SeenNames(Mapping[str, str]):
    """An expansion environment that notes which names were looked up (the ARGs a step used)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.names: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.names.add(name)
        return self.env[name]

    def get(self, name: str, default: Any = None) -> Any:
        self.names.add(name)
        return self.env.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.env)

    def __len__(self) -> int:
        return len(self.env)


class _StageRun:
    """One stage being built: its ARG values, the state so far, step numbering.

    Metadata instructions (ENV, LABEL, CMD...) change a :class:`ConfigDraft`
    and advance the cache key, each in O(1): no record, no blob, no config
    rebuilt per instruction. The draft becomes a :class:`State` when a
    filesystem step needs one (``_current``) and at the end of the stage,
    whose pending changes get one cache record (so a rebuild reuses their
    history timestamps and gives the same image).
    """

    def __init__(self, builder: Builder, planned: PlannedStage, deps: Mapping[int, State]) -> None:
        self.b = builder
        self.store = builder.store
        self.planned = planned
        self.deps = deps
        assert builder.plan is not None
        self.plan = builder.plan
        self.escape = self.plan.dockerfile.escape
        self.args: dict[str, str] = {}  # ARGs declared in this stage, with their values
        self.cmd_set = False
        self.steps_total = 1 + sum(isinstance(i, _FS_STEPS) for i in planned.stage.instructions)
        self.step_no = 0
        self.checksums: ChecksumCache | None = None
        many = len(self.plan.needed) > 1
        self.label_prefix = f"{planned.label} " if many else ""
        self.state: State | None = None  # the last state made whole
        self.key = ""  # the cache key of the steps so far (metadata steps included)
        self.draft: ConfigDraft | None = None  # metadata changes since ``state``
        self.pending_history: list[HistoryEntry] = []
        self.pending_author: str | None = None
        self.slot = cachekey.slot_id(builder.dockerfile_id(), planned.index)
        self.inputs_before: dict[int, SlotInputs] = {}
        self.inputs_now: dict[int, SlotInputs] = {}
        self.cause: str | None = None  # the first change found in this stage since the last build

    # ---- helpers -----------------------------------------------------------------------------

    def label(self) -> str:
        return f"{self.label_prefix}{self.step_no}/{max(self.steps_total, self.step_no)}"

    def _draft(self) -> ConfigDraft:
        if self.draft is None:
            assert self.state is not None
            self.draft = ConfigDraft(self.state.config.config)
        return self.draft

    def expansion_env(self) -> Mapping[str, str]:
        """What ``$VAR`` sees: the image's env, then the stage's ARGs, then the proxy build args."""
        values = self.draft.values if self.draft is not None else \
            imageconfig.env_map(self._whole().config.config)
        proxies = {k: v for k, v in self.b.opts.build_args.items() if k in PROXY_ARGS}
        return ChainMap(values, self.args, proxies)

    def _whole(self) -> State:
        assert self.state is not None
        return self.state

    def _current(self) -> State:
        """The state with the pending metadata changes applied (for a filesystem step)."""
        state = self._whole()
        if self.draft is not None or self.pending_history or self.pending_author is not None:
            config = state.config
            if self.draft is not None:
                config = records.replace(config, config=self.draft.freeze())
            config = records.replace(config, history=(*config.history, *self.pending_history),
                                     author=self.pending_author if self.pending_author is not None
                                     else config.author)
            state = State(config, state.layers, self.key)
            self._settle(state)
        return state

    def _settle(self, state: State) -> None:
        """``state`` is where the stage is now: nothing pending."""
        self.state = state
        self.key = state.key
        self.draft = None
        self.pending_history = []
        self.pending_author = None

    # ---- the stage ------------------------------------------------------------------------------

    def execute(self) -> State:
        cache = self.store.build_cache
        self.inputs_before = {} if self.b.opts.no_cache else cache.last_inputs(self.slot)
        done = False
        try:
            state = self._from()
            if self.planned.replaced:  # a named context stands for this stage: nothing of it runs
                self._settle(state)
                final = self._whole()
                done = True
                return final
            triggers = self._onbuild_triggers(state)
            self._settle(records.replace(state, config=records.replace(
                state.config, config=records.replace(state.config.config, on_build=()))))
            for step_index, instr in enumerate([*triggers, *self.planned.stage.instructions]):
                self.b._check_cancel()
                self._step(instr, step_index)
            final = self._finish()
            done = True
            return final
        finally:
            self.b.stage_causes[self.planned.index] = self.cause
            if self.checksums is not None:
                self.checksums.close()
            # a failed build keeps what it knew of the steps it did not reach
            kept = self.inputs_now if done else {**self.inputs_before, **self.inputs_now}
            with contextlib.suppress(OSError):
                cache.remember_inputs(self.slot, kept)

    def _finish(self) -> State:
        """The stage's final state; trailing metadata changes get one cache record."""
        if self.draft is None and not self.pending_history and self.pending_author is None:
            return self._whole()
        key = self.key
        if not self.b.opts.no_cache:
            record = self.store.build_cache.get(key)
            if record is not None and self._usable(record):
                self.store.build_cache.touch(key)
                self.b.used(key)
                config = ImageConfig.from_bytes(self.store.blobs.read(record.config_digest))
                state = State(config, record.layers, key)
                self._settle(state)
                return state
        return self._save(key, self._current())

    def _from(self) -> State:
        base = self.planned.base
        instr = self.planned.from_instruction
        self.step_no = 1
        if base.kind == "scratch":
            config = ImageConfig(config=ContainerConfig(env=(DEFAULT_PATH_ENV,)), platform=Platform.host())
            self.b.out.step(self.label(), "FROM scratch")
            state = State(config, (), cachekey.base_key("scratch", ""))
            self._note_from(state, "FROM scratch")
            return state
        if base.kind == "stage":
            assert base.stage is not None
            parent = self.deps[base.stage]
            label = self.plan.stages[base.stage].label
            self.b.out.step(self.label(), f"FROM {label}")
            state = State(parent.config, parent.layers, cachekey.step_key(parent.key, "FROM-stage"))
            self._note_from(state, f"FROM {label}", self.b.stage_causes.get(base.stage))
            return state
        shown = base.name
        if base.kind == "context":
            spec = self.b.opts.named_contexts[base.name]
            if spec.kind == "dir":
                return self._from_context_dir(spec)
            image = self.b.base_image(spec.value, instr)
            shown = f"{base.name} (context {spec.describe()})"
        else:
            image = self.b.base_image(base.name, instr)
        self.b.out.step(self.label(), f"FROM {shown}@{image.manifest_digest[:19]}")
        config = records.replace(image.config, platform=Platform.host())
        if not any(e.startswith("PATH=") for e in config.config.env):
            config = records.replace(config, config=records.replace(
                config.config, env=(DEFAULT_PATH_ENV, *config.config.env)))
        state = State(config, tuple(image.manifest.layers), cachekey.base_key("image", image.manifest_digest))
        self._note_from(state, f"FROM {base.name}@{image.manifest_digest}")
        return state

    def _from_context_dir(self, spec: NamedContextSpec) -> State:
        """``FROM NAME`` of a directory context: a layer of its files (less its .dockerignore), keyed by content."""
        from .copy import copy_sources

        tree = self.b.named_tree(spec.name)
        text = f"FROM {spec.name} (context {spec.value})"
        self.b.out.step(self.label(), text)
        files: dict[str, str] = {}
        try:
            digest = checksum_sources(tree, ["."], (), self.checksum_memo(), keyword="FROM", files=files)
        except BuildError as exc:
            raise _located(self.planned.from_instruction, exc.message, exc.hint) from None
        key = cachekey.base_key("context", f"{spec.name}\0{digest}")
        config = ImageConfig(config=ContainerConfig(env=(DEFAULT_PATH_ENV,)), platform=Platform.host())
        inputs = SlotInputs(key, "", text, files=files)
        self._track_cause(-1, inputs)
        self.inputs_now[-1] = inputs
        cache = self.store.build_cache
        record = None if self.b.opts.no_cache else cache.get(key)
        if record is not None and self._usable(record):
            cache.touch(key)
            self.b.used(key)
            return State(ImageConfig.from_bytes(self.store.blobs.read(record.config_digest)), record.layers, key)
        snap = self._new_snapshot(self.planned.from_instruction, None)
        try:
            copy_sources(snap.diff_dir, ["."], "/", tree=tree, preserve_owner=False, epoch=self.b._epoch,
                         scratch_dir=self.b.scratch)
        except BuildError as exc:
            self.store.layers.discard(snap)
            raise _located(self.planned.from_instruction, exc.message, exc.hint) from None
        except BaseException:
            self.store.layers.discard(snap)
            raise
        start = State(config, (), key)
        return self._save(key, self._commit(start, config, snap, f"{text} # pybuild"))

    def _note_from(self, state: State, text: str, stage_cause: str | None = None) -> None:
        inputs = SlotInputs(state.key, "", text)
        self._track_cause(-1, inputs)
        if self.cause is None and stage_cause is not None and self._changed(-1, inputs):
            self.cause = stage_cause  # FROM a stage that changed: its reason is this stage's
        self.inputs_now[-1] = inputs

    def _onbuild_triggers(self, state: State) -> list[Instruction]:
        out: list[Instruction] = []
        for expr in state.config.config.on_build:
            nodes = lex(expr, filename="ONBUILD").nodes
            for node in nodes:
                instr = parse_instruction(node, self.escape, filename=f"ONBUILD in {self.planned.base.name}")
                if isinstance(instr, Onbuild):
                    raise BuildError("ONBUILD triggers may not contain ONBUILD")
                out.append(instr)
        entitlements.check_instructions(out, self.b.allowed())  # known only now: before the stage's steps
        return out

    # ---- one step -------------------------------------------------------------------------------

    def _step(self, instr: Instruction, step_index: int) -> None:
        if isinstance(instr, Arg):
            self._declare_args(instr)
            return
        if isinstance(instr, _FS_STEPS):
            self.step_no += 1
        env = self.expansion_env()
        if isinstance(instr, Run):
            self._settle(self._run(self._current(), instr, env, step_index))
        elif isinstance(instr, Copy | Add):
            self._settle(self._copy(self._current(), instr, env, step_index))
        elif isinstance(instr, Workdir):
            self._settle(self._workdir(self._current(), instr, env, step_index))
        elif isinstance(instr, Maintainer):
            self._metadata(instr, env, step_index, author=instr.maintainer)
        else:
            self._metadata(instr, env, step_index)

    def _declare_args(self, instr: Arg) -> None:
        expanded = instr.expand(self.expansion_env(), self.escape)
        for name, default in expanded.pairs:
            if name in self.b.opts.build_args:
                self.args[name] = self.b.opts.build_args[name]
            elif default is not None:
                self.args[name] = default
            elif name in self.plan.global_args:
                self.args[name] = self.plan.global_args[name]
            else:
                self.args.pop(name, None)

    # ---- the cache, and why it missed ------------------------------------------------------------

    def _changed(self, step_index: int, inputs: SlotInputs) -> bool:
        previous = self.inputs_before.get(step_index)
        return previous is not None and previous.key != inputs.key

    def _track_cause(self, step_index: int, inputs: SlotInputs) -> None:
        """Remember the first step of the stage whose own inputs changed since the last build."""
        if self.cause is not None or not self.inputs_before:
            return
        previous = self.inputs_before.get(step_index)
        if previous is None:
            self.cause = f"a step was added or moved: {inputs.text}"
        elif previous.key != inputs.key:
            self.cause = cachekey.own_change(previous, inputs)

    def _lookup(self, key: str, inputs: SlotInputs, step_index: int, text: str) -> State | None:
        """A cache hit for ``key`` (printed as CACHED), or None after saying why it missed."""
        upstream = self.cause
        self._track_cause(step_index, inputs)
        cache = self.store.build_cache
        if not self.b.opts.no_cache:
            record = cache.get(key)
            if record is not None and self._usable(record):
                cache.touch(key)
                self.inputs_now[step_index] = inputs
                self.b.used(key)
                self.b.out.step(self.label(), text, cached=True)
                self.b.count(cached=True)
                config = ImageConfig.from_bytes(self.store.blobs.read(record.config_digest))
                return State(config, record.layers, key)
        self.b.out.step(self.label(), text)
        if self.b.opts.no_cache:
            reason = "--no-cache"
        else:
            reason = cachekey.explain_miss(self.inputs_before.get(step_index), inputs, upstream)
        self.b.out.miss(self.label(), reason)
        self.b.count(cached=False, miss_reason=f"{text}: {reason}", run=text.startswith("RUN"))
        return None

    def _usable(self, record: CacheRecord) -> bool:
        if not all(self.store.blobs.exists(d.digest) for d in record.layers):
            return False
        if not self.store.blobs.exists(record.config_digest):
            return False
        return not record.diff_ids or self.store.layers.exists(_digest.chain_id(list(record.diff_ids)))

    def _save(self, key: str, state: State, inputs: SlotInputs | None = None, step_index: int = 0) -> State:
        config_digest = self.store.blobs.put(state.config.to_bytes())
        self.store.build_cache.put(CacheRecord(key, config_digest, state.layers, state.config.diff_ids, time.time()))
        if inputs is not None:
            self.inputs_now[step_index] = inputs
        self.b.used(key)
        state = records.replace(state, key=key)
        self._settle(state)
        return state

    def checksum_memo(self) -> ChecksumCache:
        """The store's memo of content digests, opened once per stage (its connection is per thread)."""
        if self.checksums is None:
            self.checksums = ChecksumCache.for_store(self.store.root)
        return self.checksums

    def _public_args(self) -> dict[str, str]:
        return {k: v for k, v in sorted(self.args.items()) if k not in PROXY_ARGS}

    def _args_used(self, names: set[str]) -> dict[str, str]:
        """The stage's ARGs among ``names`` (those an expansion looked up), for explaining a miss."""
        return {k: v for k, v in sorted(self.args.items()) if k in names and k not in PROXY_ARGS}

    def _history(self, config: ImageConfig, created_by: str, empty: bool) -> tuple[HistoryEntry, ...]:
        entry = HistoryEntry(created=self.b.now(), created_by=created_by,
                             comment="pybuild.dockerfile.v0", empty_layer=empty)
        return (*config.history, entry)

    # ---- metadata steps -----------------------------------------------------------------------------

    def _metadata(self, instr: Instruction, env: Mapping[str, str], step_index: int,
                  author: str | None = None) -> None:
        seen = _SeenNames(env)
        expanded = instr.expand(seen, self.escape) if hasattr(instr, "expand") else instr
        if author is None:
            self._draft().apply(expanded, cmd_set_in_stage=self.cmd_set)
        else:
            self.pending_author = author
        if isinstance(instr, Cmd):
            self.cmd_set = True
        text = describe(expanded)
        key = cachekey.step_key(self.key, "config", text=text, author=author)
        inputs = SlotInputs(key, self.key, _as_written(instr), args=self._args_used(seen.names))
        self._track_cause(step_index, inputs)
        self.inputs_now[step_index] = inputs
        self.pending_history.append(HistoryEntry(created=self.b.now(), created_by=text,
                                                 comment="pybuild.dockerfile.v0", empty_layer=True))
        self.key = key

    def _workdir(self, state: State, instr: Workdir, env: Mapping[str, str], step_index: int) -> State:
        config = state.config.config
        seen = _SeenNames(env)
        path = posixpath.normpath(posixpath.join(config.working_dir or "/", instr.expand(seen, self.escape).path))
        new_cfg = records.replace(config, working_dir=path)
        text = f"WORKDIR {path}"
        key = cachekey.step_key(state.key, "WORKDIR", path=path, user=config.user)
        inputs = SlotInputs(key, state.key, _as_written(instr), args=self._args_used(seen.names))
        hit = self._lookup(key, inputs, step_index, text)
        if hit is not None:
            return hit
        started = time.monotonic()
        layers = self.store.layers
        parent = state.top_chain
        img = records.replace(state.config, config=new_cfg)
        if is_dir_below(layers.overlay, chain_lowers(layers, parent), path):
            img = records.replace(img, history=self._history(state.config, text, True))
            return self._save(key, State(img, state.layers, key), inputs, step_index)
        # Missing, or behind a symlink: create it in the merged view, following links inside the
        # rootfs (a dangling /app -> /data/app makes /data/app), as BuildKit's mkdir -p does.
        snap = self._new_snapshot(instr, parent)
        try:
            with writable_snapshot(layers, snap) as root:
                owner = resolve_chown(config.user, root) if config.user else None
                make_dirs(root, path, owner=owner, epoch=self.b._epoch)
            with os.scandir(snap.diff_dir) as entries:
                created = any(True for _ in entries)
        except BuildError as exc:
            layers.discard(snap)
            raise _located(instr, exc.message, exc.hint) from None
        except BaseException:
            layers.discard(snap)
            raise
        if not created:  # it was there after all (through a symlink): no layer
            layers.discard(snap)
            img = records.replace(img, history=self._history(state.config, text, True))
            return self._save(key, State(img, state.layers, key), inputs, step_index)
        new_state = self._commit(state, img, snap, text)
        self.b.out.done(self.label(), time.monotonic() - started)
        return self._save(key, new_state, inputs, step_index)

    def _new_snapshot(self, instr: Instruction, parent: str | None) -> Snapshot:
        try:
            return self.store.layers.create(parent)
        except TooManyLayers as exc:
            raise _located(instr, exc.message, exc.hint) from None

    def _commit(self, state: State, img: ImageConfig, snap: Snapshot, created_by: str) -> State:
        layer, desc = self.store.commit_snapshot(snap, source_date_epoch=self.b._epoch)
        history = HistoryEntry(created=self.b.now(), created_by=created_by, comment="pybuild.dockerfile.v0")
        new_img = records.replace(img, diff_ids=(*state.config.diff_ids, layer.diff_id),
                                      history=(*state.config.history, history))
        return State(new_img, (*state.layers, desc), state.key)

    # ---- COPY / ADD ---------------------------------------------------------------------------------

    def _copy(self, state: State, instr: Copy | Add, env: Mapping[str, str], step_index: int) -> State:
        seen = _SeenNames(env)
        expanded = instr.expand(seen, self.escape)
        if isinstance(instr, Copy) and instr.from_stage is not None:
            # --from sees the global ARGs only (BuildKit's rule; the plan chose the stages so)
            expanded = records.replace(expanded, from_stage=self.plan.expand_from(instr.from_stage))
        docs = heredoc_sources(expanded.heredocs, lambda w: _expand_heredoc(w, env, self.escape))
        config = state.config.config
        workdir = config.working_dir or "/"
        text = _copy_text(expanded)
        files: dict[str, str] = {}
        downloads: dict[str, Download] = {}  # ADD's URLs, fetched once: for the key and, on a miss, the copy
        with contextlib.ExitStack() as cleanup, self._copy_source(expanded, state) as (source_tree, source_chain,
                                                                                        source_name):
            cleanup.callback(_remove_downloads, downloads)
            sources_digest = self._sources_digest(expanded, source_tree, source_chain, files, downloads)
            key = cachekey.step_key(
                state.key, expanded.keyword, sources=expanded.sources, dest=expanded.dest, workdir=workdir,
                heredocs=docs, chown=expanded.chown, chmod=expanded.chmod, excludes=expanded.excludes,
                link=expanded.link, parents=getattr(expanded, "parents", False),
                checksum=getattr(expanded, "checksum", None), keep_git_dir=getattr(expanded, "keep_git_dir", False),
                source=source_name, digest=sources_digest)
            if source_chain is not None or source_name.startswith("image:"):
                files = {f"<{source_name.partition(':')[0]} {getattr(expanded, 'from_stage', '')}>": source_name}
            inputs = SlotInputs(key, state.key, _as_written(instr), args=self._args_used(seen.names), files=files)
            hit = self._lookup(key, inputs, step_index, text)
            if hit is not None:
                return hit
            started = time.monotonic()
            layers = self.store.layers
            snap = self._new_snapshot(instr, state.top_chain)
            try:
                if expanded.link:
                    target_ctx: contextlib.AbstractContextManager[Path] = contextlib.nullcontext(snap.diff_dir)
                else:
                    target_ctx = writable_snapshot(layers, snap)
                with target_ctx as root:
                    summary = copy_instruction(expanded, root, tree=source_tree, workdir=workdir, heredocs=docs,
                                               preserve_owner=not source_name.startswith("context"),
                                               epoch=self.b._epoch, scratch_dir=self.b.scratch,
                                               downloaded=downloads)
            except BuildError as exc:
                layers.discard(snap)
                raise _located(instr, exc.message, exc.hint) from None
            except BaseException:
                layers.discard(snap)
                raise
        new_state = self._commit(state, state.config, snap, f"{text} # pybuild")
        if str(summary):
            self.b.out.output(self.label(), f"  {summary}")
        self.b.out.done(self.label(), time.monotonic() - started)
        return self._save(key, new_state, inputs, step_index)

    @contextlib.contextmanager
    def _copy_source(self, instr: Copy | Add, state: State) -> Iterator[tuple[SourceTree | None, str | None, str]]:
        """(tree to copy from, its chain id when it is a stage or image, a name for the key)."""
        from_ref = getattr(instr, "from_stage", None)
        if from_ref is None:
            yield self.b.opts.context, None, "context"
            return
        index = self.plan.stage_index(from_ref, self.planned.index)
        named = self.b.named_context(from_ref) if index is None else None
        if named is not None and named.kind == "dir":
            # hashed by content as the main context is; its own .dockerignore applies
            yield self.b.named_tree(named.name), None, f"context:{named.name}"
            return
        if index is not None:
            source = self.deps.get(index)
            if source is None:
                raise _located(instr, f"stage {from_ref!r} was not built")  # plan error: deps are complete
            chain = source.top_chain
            name = f"stage:{chain or 'empty'}"
        else:
            try:
                image = self.b.base_image(named.value if named is not None else from_ref, instr)
            except PybuildError as exc:
                message = exc.message if isinstance(exc, DockerfileError) else str(exc)
                raise _located(instr, f"COPY --from={from_ref}: no stage named {from_ref!r} before this one, "
                                      f"and no such image ({message})") from None
            chain = image.top_chain_id
            name = f"image:{image.manifest_digest}"
        with readonly_view(self.store.layers, chain, self.b.scratch) as root:
            yield SourceTree(root, where=f"stage {from_ref}"), chain, name

    def _sources_digest(self, instr: Copy | Add, tree: SourceTree | None, chain: str | None,
                        files: dict[str, str], downloads: dict[str, Download]) -> str:
        local = [s for s in instr.sources if not is_url(s)]
        urls = [s for s in instr.sources if is_url(s)]
        parts: list[str] = []
        parents = getattr(instr, "parents", False)
        if local and tree is not None and chain is not None:
            # A stage's or image's content is named by its chain id: no need to read it. The
            # selection must exist all the same, and the error belongs to this line.
            from .context import select_sources
            from .dockerignore import Matcher

            excludes = Matcher(list(instr.excludes)) if instr.excludes else None
            try:
                select_sources(tree, local, excludes=excludes, parents=parents, keyword=instr.keyword)
            except BuildError as exc:
                raise _located(instr, exc.message, exc.hint) from None
            parts.append(f"chain:{chain}")
        elif local and tree is not None:
            try:
                parts.append(checksum_sources(tree, local, instr.excludes, self.checksum_memo(), parents=parents,
                                              keyword=instr.keyword, files=files))
            except BuildError as exc:
                raise _located(instr, exc.message, exc.hint) from None
        checksum = getattr(instr, "checksum", None)
        for url in urls:
            if checksum is None and url not in downloads:
                # ADD without --checksum must notice a changed file: what the URL serves now is the key
                try:
                    downloads[url] = download(url, str(self.b.scratch))
                except BuildError as exc:
                    raise _located(instr, exc.message, exc.hint) from None
            parts.append(f"{url}={checksum or downloads[url].digest}")
        return str(_digest.of_bytes("\n".join(parts).encode()))

    # ---- RUN ------------------------------------------------------------------------------------------

    def _run_context(self) -> RunContext:
        b = self.b
        return RunContext(
            store=self.store, context=b.opts.context, context_view=b.context_view, network=b.opts.network,
            secrets=b.opts.secrets, ssh=b.opts.ssh, build_args=b.opts.build_args, stage_args=dict(self.args),
            escape=self.escape,
            limits=b.opts.limits, settings=b.opts.run_settings,
            scratch=b.scratch, output=b.out, checksum_memo=self.checksum_memo, chain_of=self._chain_of,
            named_dir=self._named_dir,
            init_layer=b.init_layer, bridge_netns=b.bridge_netns, track=b.track, check_cancel=b._check_cancel)

    def _chain_of(self, source_from: str, instr: Run) -> str | None:
        """The top chain id of a RUN --mount's from=: a stage of this build, or an image."""
        index = self.plan.stage_index(source_from, self.planned.index)
        if index is not None:
            return self.deps[index].top_chain
        named = self.b.named_context(source_from)
        chain: str | None = self.b.base_image(named.value if named is not None else source_from,
                                              instr).top_chain_id
        return chain

    def _named_dir(self, source_from: str) -> tuple[Context, ContextView] | None:
        """A RUN --mount's from= naming a directory context (not a stage): its tree and view, else None."""
        if self.plan.stage_index(source_from, self.planned.index) is not None:
            return None
        named = self.b.named_context(source_from)
        if named is None or named.kind != "dir":
            return None
        return self.b.named_tree(named.name), self.b.named_view(named.name)

    def _run(self, state: State, instr: Run, env: Mapping[str, str], step_index: int) -> State:
        step = RunStep(self._run_context(), state, instr, env)
        text = step.text
        args_used = self._public_args()
        key = cachekey.step_key(state.key, "RUN", args=step.argv, mounts=step.mount_keys, network=step.network,
                                security=step.security, build_args=args_used,
                                **self.b.opts.run_settings.key_material())
        inputs = SlotInputs(key, state.key, _as_written(instr), args=args_used)
        hit = self._lookup(key, inputs, step_index, text)
        if hit is not None:
            return hit
        started = time.monotonic()
        snap = self._new_snapshot(instr, state.top_chain)
        try:
            step.execute(snap, self.label())
        except BaseException:
            self.store.layers.discard(snap)
            raise
        history_text = step.history_text(args_used)
        new_state = self._commit(state, state.config, snap, history_text)
        self.b.out.done(self.label(), time.monotonic() - started)
        return self._save(key, new_state, inputs, step_index)


def _as_written(instr: Instruction) -> str:
    """The instruction as the Dockerfile has it (variables not expanded), one line: what a miss
    reason quotes, so that a changed build arg is told apart from an edited line."""
    return " ".join(instr.original.split()) if instr.original else type(instr).keyword


def _copy_text(instr: Copy | Add) -> str:
    flags = []
    if isinstance(instr, Copy) and instr.from_stage:
        flags.append(f"--from={instr.from_stage}")
    if instr.chown:
        flags.append(f"--chown={instr.chown}")
    if instr.chmod:
        flags.append(f"--chmod={instr.chmod}")
    if instr.link:
        flags.append("--link")
    if isinstance(instr, Copy) and instr.parents:
        flags.append("--parents")
    flags.extend(f"--exclude={e}" for e in instr.excludes)
    srcs = [*instr.sources, *(f"<<{d.name}" for d in instr.heredocs)]
    return " ".join([instr.keyword, *flags, *srcs, instr.dest])


def _expand_heredoc(word: str, env: Mapping[str, str], escape: str) -> str:
    from . import shellwords

    # BuildKit expands heredoc bodies with quotes and escapes kept as written
    return shellwords.expand(word, env, escape, raw_quotes=True, raw_escapes=True)


def _remove_downloads(downloads: Mapping[str, Download]) -> None:
    for got in downloads.values():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(got.path)


def run_build(store: Store, options: BuildOptions, output: BuildOutput | None = None,
              on_builder: Callable[[Builder], None] | None = None) -> BuildResult:
    builder = Builder(store, options, output)
    if on_builder is not None:
        on_builder(builder)
    try:
        return builder.build()
    except KeyboardInterrupt:
        builder.cancel()
        raise
