"""The modules ``pybuild run`` imports: start latency is paid in imports, so the run path has a budget.

``python -X importtime`` lists every module a process imports. ``run`` must
not load the builder, the registry client or their libraries, and the total
stays under a budget measured when the layout was set (raise it only with a
start-latency measurement, ``bench/bench_start.py``, that shows it is free).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Cli

# Measured 2026-12-03 after the pybuild/cli + pybuild/linux move: 150 modules, 34 of them pybuild's;
# then 165 with isolation (runtime.seccomp, .devices, .security and _sha256 for the compiled-filter cache).
RUN_PATH_MODULE_BUDGET = 173  # +2: runtime.network and its orphans check (a store's bridges go with it);
# +1: runtime.restart and store.events (restart policies, the event journal; runtime.health only with a check)

NEVER_ON_THE_RUN_PATH = (
    "pybuild.builder", "pybuild.registry", "pybuild.cli.build", "pybuild.cli.registry", "pybuild.cli.images",
    "requests", "urllib3", "lark", "zstandard", "isal", "sqlite3", "tarfile", "dataclasses",
)


def _imported(cli: Cli, *args: str) -> list[str]:
    env = dict(os.environ, **cli.env)
    env.pop("PYBUILD_ROOT", None)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "pybuild", "--root", str(cli.root), *args],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "imported package" not in line:
            modules.append(line.rsplit("|", 1)[1].strip())
    return modules


def test_run_imports_neither_the_builder_nor_the_registry(cli: Cli, busybox: str, tmp_path: Path) -> None:
    modules = _imported(cli, "run", "--rm", "--network", "none", busybox, "true")
    assert "pybuild.runtime.containers" in modules or any(m.startswith("pybuild.runtime") for m in modules)
    loaded = [m for m in modules if m.startswith(NEVER_ON_THE_RUN_PATH)]
    assert not loaded, f"the run path imports {loaded}"
    assert len(modules) <= RUN_PATH_MODULE_BUDGET, (
        f"pybuild run imports {len(modules)} modules, over the budget of {RUN_PATH_MODULE_BUDGET}")
