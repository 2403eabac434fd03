"""Decides once, at import, whether the compiled kernels are used.

`RAFTFAST_NO_EXTENSIONS=1` selects pure Python. Otherwise the compiled kernels are used when
they were built (a normal `pip install .` builds them and fails loudly if it cannot).
"""

from __future__ import annotations

import importlib.util
import os

NO_EXTENSIONS = os.environ.get("RAFTFAST_NO_EXTENSIONS", "") not in ("", "0")


def _compiled_present() -> bool:
    return importlib.util.find_spec("raftfast.log._entries_c") is not None


USE_EXTENSIONS = not NO_EXTENSIONS and _compiled_present()
IMPLEMENTATION = "cython" if USE_EXTENSIONS else "python"
