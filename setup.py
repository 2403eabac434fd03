"""Builds the Cython kernels (`raftfast/**/_*_c.pyx`) and the compiled protocol module.

`raftfast._node_c` is `raftfast/_node_py.py` compiled as-is, with `raftfast/_node_c.pxd`
declaring RaftNode's attributes: one source serves both builds.

`RAFTFAST_NO_EXTENSIONS=1` skips them (pure-Python install). Otherwise a kernel that fails to
compile fails the install: a silent fallback to slow code is worse than a loud error.
`RAFTFAST_CYTHON_ANNOTATE=1` writes the HTML annotation next to each .pyx;
`RAFTFAST_CYTHON_DEBUG=1` compiles with bounds and overflow checks, line tracing and -O0.
"""

import glob
import os

from setuptools import setup

NO_EXTENSIONS = os.environ.get("RAFTFAST_NO_EXTENSIONS", "") not in ("", "0")
ANNOTATE = os.environ.get("RAFTFAST_CYTHON_ANNOTATE", "") not in ("", "0")
DEBUG = os.environ.get("RAFTFAST_CYTHON_DEBUG", "") not in ("", "0")


def extensions():
    sources = sorted(glob.glob("raftfast/**/_*_c.pyx", recursive=True))
    if NO_EXTENSIONS or not sources:
        return []
    from Cython.Build import cythonize
    from setuptools import Extension

    # Safe defaults (bounds checks, negative indexes): _node_py.py is ordinary Python and
    # must behave as such when compiled. Kernels turn checks off locally where they index
    # C arrays they have bounded themselves.
    directives = {
        "language_level": 3,
        "embedsignature": True,
        "overflowcheck": DEBUG,
        "linetrace": DEBUG,
    }
    macros = [("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
    compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
    targets = [(source[:-4].replace(os.sep, "."), source) for source in sources]
    targets.append(("raftfast._node_c", "raftfast/_node_py.py"))
    # Cython's change tracking looks for _node_py.pxd, not _node_c.pxd: without this, an edit
    # to the declarations alone would leave the old generated C in place.
    node_c = "raftfast/_node_py.c"
    if os.path.exists(node_c) and os.path.getmtime("raftfast/_node_c.pxd") > os.path.getmtime(node_c):
        os.remove(node_c)
    modules = [
        Extension(name, [source], define_macros=macros, extra_compile_args=compile_args)
        for name, source in targets
    ]
    return cythonize(modules, compiler_directives=directives, annotate=ANNOTATE)


# Compile the modules side by side: the protocol module alone takes a minute at -O3.
setup(ext_modules=extensions(), options={"build_ext": {"parallel": os.cpu_count() or 1}})
