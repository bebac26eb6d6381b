"""docker's management command groups: ``pybuild image ls``, ``pybuild container rm``...

Each subcommand is the top-level command itself (the same flags and
output), imported only when it runs; ``ls``/``list`` are the listing commands.
"""

from __future__ import annotations

from pybuild.cli.cmdline import group

IMAGE = {
    "ls": "pybuild.cli.images:images_cmd", "list": "pybuild.cli.images:images_cmd",
    "build": "pybuild.cli.build:build_cmd", "history": "pybuild.cli.images:history_cmd",
    "import": "pybuild.cli.images:import_cmd", "inspect": "pybuild.cli.images:inspect_cmd",
    "load": "pybuild.cli.archive:load_cmd", "prune": "pybuild.cli.prune:image_prune_cmd",
    "pull": "pybuild.cli.registry:pull_cmd", "push": "pybuild.cli.registry:push_cmd",
    "rm": "pybuild.cli.images:rmi_cmd", "save": "pybuild.cli.archive:save_cmd", "tag": "pybuild.cli.images:tag_cmd",
    "mount": "pybuild.cli.images:mount_cmd", "umount": "pybuild.cli.images:umount_cmd",
}
CONTAINER = {
    "ls": "pybuild.cli.containers:ps_cmd", "list": "pybuild.cli.containers:ps_cmd",
    "ps": "pybuild.cli.containers:ps_cmd", "commit": "pybuild.cli.containers:commit_cmd",
    "create": "pybuild.cli.containers:create_cmd", "diff": "pybuild.cli.manage:diff_cmd",
    "exec": "pybuild.cli.containers:exec_cmd", "export": "pybuild.cli.containers:export_cmd",
    "inspect": "pybuild.cli.images:inspect_cmd", "kill": "pybuild.cli.containers:kill_cmd",
    "logs": "pybuild.cli.containers:logs_cmd", "pause": "pybuild.cli.containers:pause_cmd",
    "port": "pybuild.cli.manage:port_cmd", "prune": "pybuild.cli.prune:container_prune_cmd",
    "rename": "pybuild.cli.manage:rename_cmd", "restart": "pybuild.cli.manage:restart_cmd",
    "rm": "pybuild.cli.containers:rm_cmd", "run": "pybuild.cli.containers:run_cmd",
    "start": "pybuild.cli.containers:start_cmd", "stats": "pybuild.cli.containers:stats_cmd",
    "stop": "pybuild.cli.containers:stop_cmd", "top": "pybuild.cli.manage:top_cmd",
    "unpause": "pybuild.cli.containers:unpause_cmd", "wait": "pybuild.cli.manage:wait_cmd",
    "update": "pybuild.cli.manage:update_cmd",
}


@group("image")
def image_group() -> None:
    """Manage images."""


@group("container")
def container_group() -> None:
    """Manage containers."""


for _name, _target in IMAGE.items():
    image_group.add_lazy(_name, _target)
for _name, _target in CONTAINER.items():
    container_group.add_lazy(_name, _target)
