"""Dockerfile commands: ``parse`` (and, with the builder, ``build``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pybuild.cli import pass_settings
from pybuild.cli.cmdline import Choice, IntRange, argument, command, echo, option
from pybuild.cli.ui import key_values
from pybuild.errors import DockerfileError, PybuildError, UsageError
from pybuild.store.model import ContainerConfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pybuild.cli import Settings


def config_from_changes(changes: tuple[str, ...] | list[str]) -> ContainerConfig:
    """``--change`` instructions (as ``docker import -c``) applied to an empty config."""
    from pybuild.builder import imageconfig
    from pybuild.builder.lexer import lex
    from pybuild.builder.parse import parse_instruction

    config = ContainerConfig()
    for i, change in enumerate(changes, 1):
        nodes = lex(change, filename="--change").nodes
        if len(nodes) != 1:
            raise DockerfileError(f"--change #{i} must be one instruction: {change!r}", filename="--change")
        instr = parse_instruction(nodes[0], filename="--change")
        if not isinstance(instr, imageconfig.CONFIG_INSTRUCTIONS):
            raise DockerfileError(f"{nodes[0].instruction.upper()} is not supported by --change",
                                  "use CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, SHELL, "
                                  "STOPSIGNAL, USER, VOLUME or WORKDIR", filename="--change")
        config = imageconfig.apply(config, instr)
    return config


def _instruction_json(instr: Any) -> dict[str, Any]:
    from pybuild.records import fields

    out: dict[str, Any] = {"instruction": type(instr).keyword, "flags": list(instr.flags),
                           "start_line": instr.line, "end_line": instr.end_line}
    for f in fields(instr):
        if f.name == "meta":
            continue
        value = getattr(instr, f.name)
        if f.name == "trigger":
            value = _instruction_json(value)
        elif isinstance(value, list):
            value = [list(v) if isinstance(v, tuple) else (v.__dict__ if hasattr(v, "__dict__") else v) for v in value]
        out[f.name] = value
    return out


@command("parse")
@option("-f", "--file", "dockerfile", default="Dockerfile", show_default=True,
        help="The Dockerfile to parse ('-' for stdin).")
@option("--json", "as_json", is_flag=True, help="Print the instructions as JSON.")
def parse_cmd(dockerfile: str, as_json: bool) -> None:
    """Print the parsed instructions of a Dockerfile (for debugging one)."""
    from pybuild.builder.dump import dump
    from pybuild.builder.parse import parse_dockerfile

    if dockerfile == "-":
        text, name = sys.stdin.read(), "Dockerfile"
    else:
        try:
            text = Path(dockerfile).read_text(errors="surrogateescape")
        except OSError as exc:
            raise PybuildError(f"cannot read {dockerfile}: {exc.strerror}") from None
        name = Path(dockerfile).name
    parsed = parse_dockerfile(text, filename=name)
    if as_json:
        json.dump([_instruction_json(i) for i in parsed.instructions], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    lines = dump(text, name).splitlines()
    width = len(str(max((i.end_line for i in parsed.instructions), default=1)))
    for instr, line in zip(parsed.instructions, lines, strict=False):
        span = f"{instr.line}" if instr.line == instr.end_line else f"{instr.line}-{instr.end_line}"
        echo(f"{span:>{width * 2 + 1}}  {line}")


def _secrets(items: tuple[str, ...]) -> dict[str, Any]:
    from pybuild.builder.runmounts import SecretSource

    out: dict[str, SecretSource] = {}
    for item in items:
        fields: dict[str, str] = {}
        for part in item.split(","):
            key, _, value = part.partition("=")
            fields[key.strip()] = value
        sid = fields.get("id")
        if not sid:
            raise UsageError(f"invalid --secret {item!r}", "use --secret id=ID,src=FILE or id=ID,env=VAR")
        src = fields.get("src") or fields.get("source")
        env = fields.get("env")
        if src is None and env is None:
            env = sid
        out[sid] = SecretSource(sid, path=src, env=None if src else env)
    return out


def _enter_private_mount_namespace() -> None:
    """Mounts the build makes die with this process, whatever ends it."""
    from pybuild.linux import mount as _m
    from pybuild.linux import syscalls

    try:
        syscalls.unshare(syscalls.CLONE_NEWNS)
        _m.mount(None, "/", None, _m.MS_REC | _m.MS_PRIVATE)
    except (OSError, PybuildError) as exc:
        raise PybuildError(f"cannot create a private mount namespace for the build: {exc}",
                           "pybuild build must run as root") from None


@command("build")
@argument("context", default=".", required=False)
@option("-t", "--tag", "tags", multiple=True, help="Name the image (name:tag); may be repeated.")
@option("-f", "--file", "dockerfile", default=None,
        help="The Dockerfile (default: CONTEXT/Dockerfile; '-' reads it from stdin).")
@option("--build-arg", "build_args", multiple=True, help="Set a build-time variable (KEY=VALUE).")
@option("--target", default=None, help="Build this stage (and what it needs) only.")
@option("--no-cache", is_flag=True, help="Do not use the build cache.")
@option("--pull", is_flag=True, help="Always pull base images again.")
@option("-j", "--jobs", type=IntRange(min=1), default=None,
        help="Stages built at the same time (default: the CPU count).")
@option("--network", type=Choice(["default", "host", "none"]), default="default",
        show_default=True, help="Network for RUN steps (default: the bridge).")
@option("--secret", "secrets", multiple=True, help="A secret for RUN --mount=type=secret (id=ID,src=FILE).")
@option("--ssh", "ssh", multiple=True,
        help="An ssh agent for RUN --mount=type=ssh: default (the agent at $SSH_AUTH_SOCK) or ID=SOCKET.")
@option("--allow", "allow", multiple=True,
        help="Consent to an entitlement: network.host (RUN --network=host), security.insecure "
             "(RUN --security=insecure); repeatable or comma-separated.")
@option("--label", "labels", multiple=True, help="Set a label on the image (KEY=VALUE).")
@option("-q", "--quiet", is_flag=True, help="Print only the image ID.")
@option("--progress", type=Choice(["auto", "plain", "tty", "quiet"]), default="auto", show_default=True,
        envvar="BUILDKIT_PROGRESS", help="auto: a live view on a terminal, plain lines otherwise "
                                         "(default: $BUILDKIT_PROGRESS, else auto).")
@option("--explain", is_flag=True, help="Say why each step missed the cache.")
@option("--iidfile", default=None, help="Write the image ID to this file.")
@option("-o", "--output", "outputs", multiple=True,
        help="Also write the result: type=oci|docker,dest=FILE (archive), type=local,dest=DIR, "
             "type=tar,dest=FILE (the filesystem).")
@option("--platform", "platforms", multiple=True,
        help="Target platform: the host's only (comma-separated or repeated, each the host's).")
@option("--load", is_flag=True, help="Accepted for buildx: the image is always in the store.")
@option("--provenance", default=None,
        help="buildx's provenance attestation: accepted; pybuild makes none (a warning unless false).")
@option("--sbom", default=None,
        help="buildx's SBOM attestation: accepted; pybuild makes none (a warning unless false).")
@option("--metadata-file", "metadata_file", default=None,
        help="Write the build result as buildx's JSON (containerimage.digest, ...) to this file.")
@option("--add-host", "add_hosts", multiple=True,
        help="An /etc/hosts line for RUN steps: NAME:IP (IP may be host-gateway).")
@option("--ulimit", "ulimits", multiple=True, help="A resource limit of RUN steps: NAME=SOFT[:HARD].")
@option("--shm-size", "shm_size", default=None, help="Size of /dev/shm in RUN steps (e.g. 128m; default 64m).")
@option("--build-context", "build_contexts", multiple=True,
        help="A named context: NAME=DIR or NAME=docker-image://REF (for FROM, COPY --from, RUN --mount=from).")
@option("--push", is_flag=True, help="Push the image to its registry after the build.")
@option("--cache-to", "cache_to", default=None, help="Export the build cache (type=registry,ref=REF).")
@option("--cache-from", "cache_from", multiple=True, help="Use a build cache (type=registry,ref=REF).")
@option("-m", "--memory", default=None, help="Memory limit for RUN steps (e.g. 512m).")
@option("--cpus", type=float, default=None, help="CPU limit for RUN steps (e.g. 1.5).")
@option("--cpu-shares", type=int, default=None, help="CPU shares (relative weight) for RUN steps.")
@option("--pids-limit", type=int, default=None, help="Process limit for RUN steps.")
@pass_settings
def build_cmd(settings: Settings, context: str, tags: tuple[str, ...], dockerfile: str | None,
              build_args: tuple[str, ...], target: str | None, no_cache: bool, pull: bool, jobs: int | None,
              network: str, secrets: tuple[str, ...], ssh: tuple[str, ...], allow: tuple[str, ...],
              labels: tuple[str, ...], quiet: bool,
              progress: str,
              explain: bool, iidfile: str | None, outputs: tuple[str, ...], platforms: tuple[str, ...],
              load: bool, provenance: str | None, sbom: str | None, metadata_file: str | None,
              add_hosts: tuple[str, ...], ulimits: tuple[str, ...], shm_size: str | None,
              build_contexts: tuple[str, ...], push: bool,
              cache_to: str | None, cache_from: tuple[str, ...], memory: str | None, cpus: float | None,
              cpu_shares: int | None, pids_limit: int | None) -> None:
    """Build an image from a Dockerfile (also: pybuild [OPTIONS] CONTEXT)."""
    import os
    import signal

    from pybuild.builder.context import Context
    from pybuild.builder.entitlements import parse_allow
    from pybuild.builder.executor import BuildOptions, run_build
    from pybuild.builder.plan import check_platforms
    from pybuild.store import reference as _reference

    allowed = parse_allow(allow)
    refs = []
    for tag in tags:
        ref = _reference.parse(tag)
        if ref.digest is not None:
            raise UsageError(f"invalid tag {tag!r}", "a build names its image with a tag, not a digest")
        refs.append(ref)
    if push and not refs:
        raise UsageError("--push needs a name", "add -t REGISTRY/NAME:TAG")
    if cache_to or cache_from:
        from pybuild.builder.remotecache import parse_spec

        for spec in cache_from:
            parse_spec(spec, "--cache-from")  # a bad value fails now, not after the build
        if cache_to:
            parse_spec(cache_to, "--cache-to")
    check_platforms(platforms)
    from pybuild.builder import attestations
    from pybuild.builder.namedcontext import parse_build_contexts
    from pybuild.builder.runsettings import parse_run_settings

    run_settings = parse_run_settings(add_hosts, ulimits, shm_size)
    named_contexts = parse_build_contexts(build_contexts)
    from pybuild.builder.sshagent import parse_ssh

    ssh_agents = parse_ssh(ssh)
    attest_warnings = [attestations.warning(kind) for kind, value in (("provenance", provenance), ("sbom", sbom))
                       if attestations.requested(kind, value)]
    if metadata_file:
        from pybuild.builder.metadata import check_destination

        check_destination(metadata_file)
    from pybuild.runtime import cgroups

    limits = cgroups.validate(cgroups.Limits(memory=cgroups.parse_memory(memory) if memory else None,
                                             cpus=cpus, cpu_shares=cpu_shares, pids=pids_limit))
    args = key_values(build_args, "--build-arg", from_env=True)
    label_map = key_values(labels, "--label")
    from pybuild.builder.outputs import parse_output

    output_specs = [parse_output(o) for o in outputs]
    secret_map = _secrets(secrets)
    store = settings.store()
    if context == "-" and dockerfile == "-":
        raise UsageError("cannot read both the context and the Dockerfile from stdin")
    _enter_private_mount_namespace()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        # the context is closed (a tar context's temp dir removed) however the build ends
        if context == "-":
            ctx_obj, df_text = Context.from_stdin(sys.stdin.buffer, store.tmp, dockerfile)
        else:
            ctx_obj = Context.from_dir(context, dockerfile)
            df_text = sys.stdin.read() if dockerfile == "-" else None
        # errors and history name the file read: Dockerfile, or the Containerfile found instead
        df_path = ctx_obj.dockerfile_path
        df_name = df_path.name if df_path is not None else os.path.basename(dockerfile or "Dockerfile")
        if dockerfile == "-":
            df_name = "Dockerfile"
        with ctx_obj:
            from pybuild.cli.progress import build_output

            output = build_output(quiet, progress, explain)
            for text in attest_warnings:
                echo(f"pybuild: warning: {text}", err=True)
            options = BuildOptions(context=ctx_obj, tags=refs, build_args=args, target=target, no_cache=no_cache,
                                   pull=pull, jobs=jobs or 0, network=network, secrets=secret_map,
                                   labels=label_map, dockerfile_text=df_text, dockerfile_name=df_name,
                                   limits=limits, allow=allowed, run_settings=run_settings,
                                   named_contexts=named_contexts, ssh=ssh_agents)
            try:
                if cache_from:
                    from pybuild.builder.remotecache import import_cache

                    for spec in cache_from:
                        import_cache(store, spec, output)
                result = run_build(store, options, output)
                if cache_to:  # before finish: a live view shows lines only while it runs
                    from pybuild.builder.remotecache import export_cache

                    export_cache(store, cache_to, result, output)
            except BaseException:
                output.finish(ok=False)
                raise
            output.finish(ok=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    image = result.image
    if output_specs:
        from pybuild.builder.outputs import write_output

        for output_spec in output_specs:
            write_output(store, image, output_spec, refs)
    if iidfile:
        Path(iidfile).write_text(image.id)
    if metadata_file:
        from pybuild.builder.metadata import build_metadata, write_metadata

        write_metadata(metadata_file, build_metadata(store, image, list(tags)))
    if quiet or progress == "quiet":
        echo(image.id)
    else:
        s = result.stats
        echo(f"{s.steps} steps: {s.cached} cached, {s.executed} built")
        echo(f"writing image {image.id}")
        for ref in refs:
            echo(f"naming to {ref.familiar()}")
    if push:
        from pybuild.cli.registry import push_built

        for ref in refs:
            push_built(store, image, ref, quiet)
