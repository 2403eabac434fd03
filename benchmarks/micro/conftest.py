"""pytest-benchmark micro benchmarks: each kernel, pure and compiled twin side by side.

    python -m pytest benchmarks/micro --benchmark-only

The twins are imported directly (`raftfast.log._entries_py` and `_entries_c`, ...), not through
the dispatchers, so both run in one process whatever `raftfast.IMPLEMENTATION` says. A compiled
twin that is not built is skipped. Each benchmark's group holds its two twins; the `(x.x)`
figures pytest-benchmark prints next to each time are the ratio to the faster one.

`RaftNode` is the exception: `_node_py` and `_node_c` are the same source, interpreted and
compiled, and both run on the kernels `raftfast.IMPLEMENTATION` names (the header says which).
The whole-build comparison is `python -m benchmarks.core`.

This directory has no `__init__.py` on purpose: asv walks the `benchmarks` package for its own
suite and must not import pytest modules.
"""

from __future__ import annotations

import os
import sys

import pytest

# The node benchmarks share their workloads with asv and benchmarks.core (benchmarks/workloads.py).
# Appended, not prepended: the installed raftfast, compiled or not, must win over the source tree.
sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from _twins import KERNELS, TWINS, try_import


def pytest_configure(config: pytest.Config) -> None:
    # The project's addopts carry --benchmark-disable for the ordinary test run; asking for
    # --benchmark-only here means the benchmarks should run.
    if config.getoption("benchmark_only", False) and config.getoption("benchmark_disable", False):
        config.option.benchmark_disable = False


def pytest_report_header(config: pytest.Config) -> str:
    import raftfast

    built = [name for name in KERNELS if try_import(f"raftfast.{name}_c") is not None]
    return (f"raftfast {raftfast.__version__}, IMPLEMENTATION={raftfast.IMPLEMENTATION}, "
            f"compiled twins built: {', '.join(built) or 'none'}")


@pytest.fixture(params=TWINS)
def twin(request) -> str:
    """'py' or 'c': which twin a benchmark runs (a 'c' test skips itself when not built)."""
    return request.param
