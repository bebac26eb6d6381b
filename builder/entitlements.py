"""Build entitlements, as BuildKit's: what a Dockerfile may do only with the build's consent.

``RUN --network=host`` (the host's network namespace: its loopback services
included) needs ``network.host``; ``RUN --security=insecure`` (a privileged
container: every capability, no seccomp filter, every device) needs
``security.insecure``. The consent is ``pybuild build --allow ENTITLEMENT``
(repeatable, or comma-separated as docker buildx takes it); ``--network
host`` for the whole build implies ``network.host``, as buildx adds it.

As BuildKit refuses at solve time, the whole plan is checked before any step
runs, after ``--target`` pruning: a stage the build does not need needs no
consent. ONBUILD triggers come from base images, known only when a stage
starts: they are checked then, before the stage's first step.
"""

from __future__ import annotations

from collections.abc import Iterable

from pybuild.errors import DockerfileError, UsageError

from .instructions import Instruction, Run
from .plan import BuildPlan

NETWORK_HOST = "network.host"
SECURITY_INSECURE = "security.insecure"
ENTITLEMENTS = (NETWORK_HOST, SECURITY_INSECURE)


def parse_allow(values: Iterable[str]) -> frozenset[str]:
    """``--allow`` values (each may be a comma-separated list); an unknown entitlement is a UsageError."""
    out: set[str] = set()
    for value in values:
        for item in value.split(","):
            name = item.strip()
            if not name:
                continue
            if name not in ENTITLEMENTS:
                raise UsageError(f'unknown entitlement "{name}" for --allow', f"use {', '.join(ENTITLEMENTS)}")
            out.add(name)
    return frozenset(out)


def needed(instr: Instruction) -> list[tuple[str, str]]:
    """(flag as written, entitlement) for each entitlement ``instr`` needs."""
    if not isinstance(instr, Run):
        return []
    out = []
    if instr.network == "host":
        out.append(("--network=host", NETWORK_HOST))
    if instr.security == "insecure":
        out.append(("--security=insecure", SECURITY_INSECURE))
    return out


def check_instructions(instructions: Iterable[Instruction], allowed: frozenset[str]) -> None:
    """Raise a DockerfileError at the first instruction that needs an entitlement not in ``allowed``."""
    for instr in instructions:
        for flag, entitlement in needed(instr):
            if entitlement not in allowed:
                # one line, no source excerpt: the flag and the way to consent say it all
                raise DockerfileError(f"{type(instr).keyword} {flag} needs the build's consent: "
                                      f"pybuild build --allow {entitlement}",
                                      filename=instr.meta.filename, line=instr.line)


def check_plan(plan: BuildPlan, allowed: frozenset[str]) -> None:
    """Every stage the build needs (in Dockerfile order), before anything runs."""
    for index in plan.needed:
        if not plan.stages[index].replaced:  # a stage a named context replaces runs none of its steps
            check_instructions(plan.stages[index].stage.instructions, allowed)
