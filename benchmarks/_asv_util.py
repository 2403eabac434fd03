"""Helpers shared by the asv benchmark modules (this module holds no benchmarks).

asv imports every module of the `benchmarks` package to discover benchmarks: by name prefix
(`time_`, `track_`, `peakmem_`, ...) in module-level functions and classes. `core.py`,
`wal_bench.py` and `peers.py` are command-line tools with no such names, so discovery imports
them and finds nothing; `micro/` has no `__init__.py`, so asv never walks into the pytest files.
"""

from __future__ import annotations

import importlib

TWINS = ("py", "c")
"""asv parameter of the kernel benchmarks: the pure twin and the compiled twin."""


def twin_module(base: str, twin: str):
    """`raftfast.<base>_<twin>`; NotImplementedError (asv: skip) for a compiled twin not built."""
    name = f"raftfast.{base}_{twin}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        raise NotImplementedError(f"{name} is not built") from None
