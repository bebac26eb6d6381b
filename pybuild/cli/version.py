"""``pybuild version``: docker's shape (Client and Server), for a tool that is both."""

from __future__ import annotations

import platform
import sys
from typing import Any

from pybuild.cli.cmdline import command, echo, option

API_VERSION = "1.43"  # the Engine API whose shapes pybuild's JSON follows (docker 24)


def version_doc() -> dict[str, Any]:
    """``docker version --format '{{json .}}'``'s keys; no daemon, so the server is this same program."""
    from pybuild import __version__

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    python = f"python{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    client = {"Platform": {"Name": "pybuild"}, "Version": __version__, "ApiVersion": API_VERSION,
              "DefaultAPIVersion": API_VERSION, "GoVersion": python, "GitCommit": "", "BuiltTime": "",
              "Os": "linux", "Arch": arch, "Context": "default"}
    server = {"Platform": {"Name": "pybuild (daemonless)"},
              "Components": [{"Name": "Engine", "Version": __version__,
                              "Details": {"ApiVersion": API_VERSION, "Arch": arch, "Os": "linux",
                                          "KernelVersion": platform.release(), "GoVersion": python}}],
              "Version": __version__, "ApiVersion": API_VERSION, "MinAPIVersion": "1.12", "GitCommit": "",
              "GoVersion": python, "Os": "linux", "Arch": arch, "KernelVersion": platform.release()}
    return {"Client": client, "Server": server}


@command("version")
@option("-f", "--format", "fmt", help="Go template ({{.Client.Version}}, {{json .}}...).")
def version_cmd(fmt: str | None) -> None:
    """Show the pybuild version information."""
    doc = version_doc()
    if fmt:
        from pybuild.cli import formatting

        formatting.inspect(fmt, [doc])
        return
    c, s = doc["Client"], doc["Server"]
    lines = ["Client:",
             f" Version:           {c['Version']}",
             f" API version:       {c['ApiVersion']}",
             f" Python version:    {c['GoVersion']}",
             f" OS/Arch:           {c['Os']}/{c['Arch']}",
             f" Context:           {c['Context']}",
             "",
             f"Server: {s['Platform']['Name']}",
             " Engine:",
             f"  Version:          {s['Version']}",
             f"  API version:      {s['ApiVersion']} (minimum version {s['MinAPIVersion']})",
             f"  Python version:   {s['GoVersion']}",
             f"  OS/Arch:          {s['Os']}/{s['Arch']}",
             f"  Kernel Version:   {s['KernelVersion']}"]
    for line in lines:
        echo(line)
