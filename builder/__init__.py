"""Dockerfile parsing, build planning, caching and execution."""
