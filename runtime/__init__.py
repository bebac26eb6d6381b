"""Containers: namespaces, cgroups, overlay rootfs, lifecycle."""
