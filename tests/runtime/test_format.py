"""--format (Go templates through pybuild.cli.gotemplate) on the listing and inspect commands, as docker's
scripts use it: inspect -f, ps --filter ... -q, {{json .}} piped into python3 -m json.tool, table."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pybuild.cli import gotemplate
from pybuild.errors import UsageError
from tests.conftest import Cli

pytestmark = pytest.mark.slow


def test_format_on_every_command(cli: Cli, busybox: str) -> None:
    cli("run", "-d", "--name", "web", "--network", "none", "--label", "tier=front", busybox, "sleep", "30")
    try:
        assert cli("ps", "--format", '{{.Names}} {{.State}} {{.Label "tier"}}').stdout == "web running front\n"
        row = cli("ps", "--format", "{{json .}}").stdout
        doc = json.loads(subprocess.run([sys.executable, "-m", "json.tool"], input=row, capture_output=True,
                                        text=True, check=True).stdout)
        assert sorted(doc) == ["Command", "CreatedAt", "ID", "Image", "Labels", "LocalVolumes", "Mounts", "Names",
                               "Networks", "Ports", "RunningFor", "Size", "State", "Status"]
        assert doc["Labels"] == "tier=front" and doc["Status"].startswith("Up ")
        table = cli("ps", "--format", "table {{.ID}}\\t{{.Names}}").stdout.splitlines()
        assert table[0].split("   ") == ["CONTAINER ID", "NAMES"] and table[1].endswith("web")
        assert cli("ps", "-q", "--filter", "name=web").stdout.strip() == doc["ID"]
        assert cli("inspect", "-f", "{{.State.Status}}", "web").stdout == "running\n"
        assert cli("inspect", "--format", '{{index .Config.Labels "tier"}}', "web").stdout == "front\n"
        assert json.loads(cli("inspect", "-f", "{{json .Config.Labels}}", "web").stdout) == {"tier": "front"}
        assert cli("images", "--format", "{{.Repository}}:{{.Tag}}").stdout == "busybox:latest\n"
        assert json.loads(cli("images", "--format", "json").stdout)["Repository"] == "busybox"
        assert cli("history", "--format", "{{.CreatedBy}}", busybox).stdout.strip() != ""
        cli("volume", "create", "data")
        assert cli("volume", "ls", "--format", "{{.Driver}} {{.Name}}").stdout == "local data\n"
        assert cli("volume", "inspect", "-f", "{{.Mountpoint}}", "data").stdout.strip().endswith("/data/_data")
        assert "bridge" in cli("network", "ls", "--format", "{{.Name}}").stdout.split()
        assert cli("stats", "--no-stream", "--format", "{{.Name}}", "web").stdout == "web\n"
        assert cli("version", "--format", "{{.Client.Version}}").stdout.strip() != ""
        assert cli("info", "--format", "{{.Driver}}").stdout == "overlay2\n"
        bad = cli("ps", "--format", "{{.Names", check=False)
        assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
        assert bad.stderr.startswith("pybuild: error: template parsing error: ")
    finally:
        cli("rm", "-f", "web", check=False)


def test_template_language() -> None:
    data = {"A": ["x", "y"], "M": {"b": 2, "a": 1}, "N": "Web", "E": "", "T": True}
    cases = {
        "{{range .A}}[{{.}}]{{end}}": "[x][y]",
        "{{range $k, $v := .M}}{{$k}}={{$v}};{{end}}": "a=1;b=2;",
        "{{if .E}}y{{else if .T}}t{{else}}n{{end}}": "t",
        "{{printf \"%-5s|%d\" .N 3}}": "Web  |3",
        "{{join .A \", \"}} {{upper .N}} {{lower .N}}": "x, y WEB web",
        "{{.Missing}}": "<no value>",
        "{{- \" a \" -}} b": " a b",
        "{{with .N}}{{.}}{{end}}{{/* comment */}}": "Web",
        "{{len .A}} {{index .A 1}} {{eq .N \"Web\"}}": "2 y true",
        "{{json .M}}": '{"a":1,"b":2}',
    }
    for text, expected in cases.items():
        assert gotemplate.compile(text).execute(data) == expected, text
    for bad in ("{{.A", "{{nosuch .A}}", "{{end}}"):
        with pytest.raises(UsageError):
            gotemplate.compile(bad).execute(data)
