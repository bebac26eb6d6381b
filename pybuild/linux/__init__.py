"""The OS layer everything else stands on.

Thin wrappers over what Linux offers and Python's ``os`` does not (mount(2),
namespaces, capabilities, the new mount API), the file operations that must
not be raced by a hostile tree (directory-descriptor walks, resolve-under-root),
atomic writes, the fork-and-report helper and the fd-passing socket calls.
Nothing here knows about images, layers or containers: it imports only
``pybuild.errors`` and ``pybuild.records``.
"""
