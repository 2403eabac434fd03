"""Loading a kernel's twin by name, skipping a compiled twin that is not built."""

from __future__ import annotations

import importlib

import pytest

TWINS = ("py", "c")
KERNELS = ("log._entries", "quorum._quorum", "codec._codec", "_node", "kv._apply", "kv._loadgen")


def try_import(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:  # the twin exists but something it needs does not: a real error
            raise
        return None


def twin_module(base: str, twin: str):
    """`raftfast.<base>_<twin>`, or skip the test when that compiled twin is not built."""
    name = f"raftfast.{base}_{twin}"
    module = try_import(name)
    if module is None:
        pytest.skip(f"{name} is not built (pip install -e . compiles it)")
    return module
