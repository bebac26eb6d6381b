"""From a parsed Dockerfile to the stages a build needs, in an order that works.

A stage depends on another when it starts FROM it, copies ``--from`` it or
mounts it (``RUN --mount=from=``). Only the target stage (``--target``,
default the last) and what it depends on are built; stages with no path
between them can run at the same time.

Global ARGs (before the first FROM) are resolved here, with ``--build-arg``
overriding their defaults, because FROM lines and ``--from`` flags may use
them.
"""

from __future__ import annotations

import platform as _platform
from collections.abc import Mapping

from pybuild.errors import DockerfileError, UsageError
from pybuild.records import field, record

from . import shellwords
from .instructions import Copy, Dockerfile, From, Instruction, Run, Stage
from .namedcontext import NamedContextSpec, lookup
from .runmounts import raw_from

# Usable without an ARG line, and kept out of cache keys and history (as Docker does).
PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
              "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")


def host_platform_args() -> dict[str, str]:
    """BuildKit's automatic platform ARGs (global scope), for the host platform."""
    machine = _platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)
    variant = "v7" if arch == "arm" else ""
    plat = f"linux/{arch}" + (f"/{variant}" if variant else "")
    out: dict[str, str] = {}
    for prefix in ("BUILD", "TARGET"):
        out[f"{prefix}PLATFORM"] = plat
        out[f"{prefix}OS"] = "linux"
        out[f"{prefix}ARCH"] = arch
        out[f"{prefix}VARIANT"] = variant
    return out


def check_platforms(values: tuple[str, ...] | list[str]) -> None:
    """``build --platform``: each (comma-separated, repeatable, as buildx takes it) must be the host's."""
    from pybuild.errors import UsageError

    host = host_platform_args()["TARGETPLATFORM"]
    accepted = {host, host.rsplit("/", 1)[0] if host.count("/") == 2 else host, host.split("/")[1], "local"}
    for value in values:
        for item in value.split(","):
            plat = item.strip().lower()
            if plat not in accepted:
                raise UsageError(f"platform {item.strip() or repr(item)} is not supported",
                                 f"pybuild builds for the host ({host}) only")


@record(frozen=True)
class StageBase:
    kind: str  # "scratch", "stage", "image" or "context" (a named context, see namedcontext.py)
    name: str  # the image reference, the stage index as text, or the context's (normalised) name
    stage: int | None = None


@record
class PlannedStage:
    stage: Stage
    base: StageBase
    from_instruction: From
    deps: set[int] = field(default_factory=set)
    replaced: bool = False  # the stage's name is a named context: it is that context, its steps are not run

    @property
    def index(self) -> int:
        return self.stage.index

    @property
    def label(self) -> str:
        return self.stage.name or f"stage-{self.stage.index}"


@record
class BuildPlan:
    dockerfile: Dockerfile
    global_args: dict[str, str]  # name -> value, after --build-arg
    stages: list[PlannedStage]
    target: int
    needed: list[int]  # stage indexes to build, dependencies first

    def expand_from(self, raw: str) -> str:
        """A ``--from``/``from=`` value with the global ARGs (only those: BuildKit's rule) expanded."""
        return shellwords.expand(raw, self.global_args, self.dockerfile.escape)

    def stage_index(self, ref: str, before: int) -> int | None:
        """The stage ``ref`` names (name or index) among those before ``before``, or None."""
        wanted = ref.lower()
        for planned in self.stages[:before]:
            if planned.stage.name == wanted:
                return planned.index
        if ref.isdecimal() and int(ref) < before:
            return int(ref)
        return None


def resolve_global_args(dockerfile: Dockerfile, build_args: Mapping[str, str]) -> dict[str, str]:
    """Values of the global ARGs (and the automatic platform ARGs) with ``--build-arg`` applied."""
    values = host_platform_args()
    for arg in dockerfile.global_args:
        expanded = arg.expand(values, dockerfile.escape)
        for name, default in expanded.pairs:
            if name in build_args:
                values[name] = build_args[name]
            elif default is not None:
                values[name] = default
            elif name in values:
                pass
            else:
                values.pop(name, None)
    return values


def _error(instr: Instruction, message: str, hint: str | None = None) -> DockerfileError:
    return DockerfileError(message, hint, filename=instr.meta.filename, line=instr.line,
                           source_line=instr.meta.source_line or None)


def make_plan(dockerfile: Dockerfile, build_args: Mapping[str, str], target: str | None = None,
              contexts: Mapping[str, NamedContextSpec] | None = None) -> BuildPlan:
    """``contexts``: the build's named contexts (``--build-context``), which stand in for stages and images."""
    global_args = resolve_global_args(dockerfile, build_args)
    plan = BuildPlan(dockerfile, global_args, [], len(dockerfile.stages) - 1, [])
    contexts = contexts or {}
    for stage in dockerfile.stages:
        named_stage = lookup(contexts, stage.name) if stage.name else None
        if named_stage is not None:  # BuildKit: the context replaces the stage, whose steps never run
            plan.stages.append(PlannedStage(stage, StageBase("context", named_stage.name), stage.base, replaced=True))
            continue
        base_instr = stage.base.expand(global_args, dockerfile.escape)
        image = base_instr.image
        if not image:
            raise _error(stage.base, "base name (" + stage.base.image + ") should not be blank",
                         "set the ARG it uses, or give the image a default")
        if base_instr.platform:
            host = global_args.get("TARGETPLATFORM", "")
            if base_instr.platform.lower() not in (host, host.rsplit("/", 1)[0] if host.count("/") == 2 else host):
                raise _error(stage.base, f"platform {base_instr.platform} is not supported",
                             f"pybuild builds for the host platform ({host}) only")
        if stage.name is not None and image.lower() == stage.name:
            raise _error(stage.base, f"circular dependency detected on stage: {stage.name}",
                         "a stage cannot start FROM itself")
        index = next((p.index for p in plan.stages if p.stage.name == image.lower()), None)
        if image.lower() == "scratch":
            base = StageBase("scratch", "scratch")
        elif index is not None:
            base = StageBase("stage", str(index), index)
        elif (context := lookup(contexts, image)) is not None:
            base = StageBase("context", context.name)
        else:
            base = StageBase("image", image)
        planned = PlannedStage(stage, base, base_instr)
        if base.stage is not None:
            planned.deps.add(base.stage)
        for instr in stage.instructions:
            try:
                refs = _referenced_stages(instr, global_args, dockerfile.escape)
            except DockerfileError as exc:
                raise _error(instr, exc.message, exc.hint) from None
            for ref in refs:
                dep = plan.stage_index(ref, stage.index)
                if dep is not None:
                    planned.deps.add(dep)
                elif (named := dockerfile.stage(ref)) is not None and named.index == stage.index:
                    raise _error(instr, f"circular dependency detected on stage: {stage.name or stage.index}",
                                 "a stage cannot copy or mount from itself")
                elif named is not None and isinstance(instr, Copy | Run):
                    raise _error(instr, f'stage "{ref}" is defined after the stage that uses it',
                                 "move the stage it refers to above this one")
        plan.stages.append(planned)
    if target is not None:
        found = dockerfile.stage(target) if not target.isdecimal() else None
        if found is None:
            names = [s.name for s in dockerfile.stages if s.name]
            raise UsageError(f'target stage "{target}" could not be found',
                             "stages: " + ", ".join(names) if names else "the Dockerfile names no stages")
        plan.target = found.index
    plan.needed = _order(plan, plan.target)
    return plan


def _referenced_stages(instr: object, args: Mapping[str, str], escape: str) -> list[str]:
    refs: list[str] = []
    if isinstance(instr, Copy) and instr.from_stage is not None:
        refs.append(shellwords.expand(instr.from_stage, args, escape))
    if isinstance(instr, Run):
        for text in instr.mounts:
            try:
                raw = raw_from(text)
            except ValueError as exc:
                raise _error(instr, f"invalid RUN --mount: {exc}") from None
            if raw:
                refs.append(raw)
    return refs


def _order(plan: BuildPlan, target: int) -> list[int]:
    """The stages ``target`` needs, each after its dependencies (dependencies only point back)."""
    needed: set[int] = set()
    stack = [target]
    while stack:
        i = stack.pop()
        if i in needed:
            continue
        needed.add(i)
        stack.extend(plan.stages[i].deps)
    return sorted(needed)
