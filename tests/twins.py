"""The built twins of a kernel: `built_twins("raftfast.kv._apply")` is the pure module, then the
compiled one if it was built (a compiled twin that is not built is skipped; `test_build.py`
makes sure the compiled leg of CI has them)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import List


def built_twins(name: str) -> List[ModuleType]:
    found = []
    for suffix in ("_py", "_c"):
        try:
            found.append(importlib.import_module(f"{name}{suffix}"))
        except ImportError:
            continue
    return found
