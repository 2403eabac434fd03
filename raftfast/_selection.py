"""Decides once, at import, whether the compiled kernels are used.

`RAFTFAST_NO_EXTENSIONS=1` selects pure Python. Otherwise the compiled kernels are used when
all of them were built (a normal `pip install .` builds them and fails loudly if it cannot).
"""

from __future__ import annotations

import os
from importlib.machinery import EXTENSION_SUFFIXES

NO_EXTENSIONS = os.environ.get("RAFTFAST_NO_EXTENSIONS", "") not in ("", "0")

_HERE = os.path.dirname(__file__)
# Every compiled twin, as a path below the package. All or none: a half-built tree is pure.
KERNELS = (
    "log/_entries_c", "quorum/_quorum_c", "codec/_codec_c", "_actions_c", "_proposals_c", "_node_c", "kv/_apply_c",
    "kv/_loadgen_c",
)


def _built(kernel: str) -> bool:
    # Look on disk rather than importing: importing a kernel here would import its package
    # while this module is still initialising.
    base = os.path.join(_HERE, *kernel.split("/"))
    return any(os.path.exists(base + suffix) for suffix in EXTENSION_SUFFIXES)


USE_EXTENSIONS = not NO_EXTENSIONS and all(_built(k) for k in KERNELS)
IMPLEMENTATION = "cython" if USE_EXTENSIONS else "python"
