"""pybuild: a daemonless Dockerfile engine."""

__version__ = "0.1.0"
