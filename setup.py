"""The compiled core: Cython compiles the modules in COMPILED from their own .py
sources, with the C types their .pxd files declare; the rules live only in the
.py files, which also run interpreted (PCPD_PURE_PYTHON=1, see pcpd.core).

A machine without a C compiler or Python's headers still installs (the build
says why on stderr, which pip shows with -v), and pcpd runs interpreted, the
same code, slower, saying so at every start.
"""

import importlib.util
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


def compiled_modules() -> tuple[str, ...]:
    """pcpd.core's COMPILED, the one list, read without importing the package."""
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("_pcpd_core", os.path.join(here, "pcpd", "core.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.COMPILED


class OptionalBuildExt(build_ext):
    """Compile what compiles; the rest runs interpreted, and the build says why."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:          # no compiler: setuptools' own errors vary
            print(f"pcpd: compiled core not built ({e}); pcpd runs interpreted", file=sys.stderr)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:
            print(f"pcpd: {ext.name} not compiled ({e}); pcpd runs interpreted", file=sys.stderr)


def extensions() -> list:
    if os.environ.get("PCPD_PURE_PYTHON"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("pcpd: Cython not available; pcpd runs interpreted", file=sys.stderr)
        return []
    sources = [name.replace(".", "/") + ".py" for name in compiled_modules()]
    return cythonize(sources, language_level=3, quiet=True,
                     compiler_directives={"annotation_typing": False, "boundscheck": True,
                                          "wraparound": True})


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
