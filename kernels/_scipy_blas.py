"""Numba's BLAS without all of ``scipy.linalg``: the kernels' first call ~0.3 s sooner.

Numba's ``np.dot`` calls the BLAS that SciPy ships, through the function table of the extension
module ``scipy.linalg.cython_blas``, which Numba imports by name the first time a compiled
function needs BLAS (at the first kernel call of a process, whether it compiles or loads from
the cache). Importing that module the ordinary way first runs the package ``scipy.linalg``:
all of its decompositions, and through SciPy's array-API layer ``numpy.f2py``. On the 2-core
machine of ``benchmarks/results/cpu_zen3.md`` that was 0.29-0.34 s of the 0.7-0.8 s first
training step with a warm Numba cache; the extension module alone loads in ~5 ms.

So ``load()`` (called once, when ``kernels`` is imported) loads just the extension and registers
it under its name in ``sys.modules``, where Numba finds it. ``scipy.linalg`` itself still
imports as usual whenever a program asks for it; one thing would differ, and is mended: a
package's submodule is normally also an attribute of the package (``scipy.linalg.cython_blas``),
and a module registered ahead of its package is not. A finder at the front of
``sys.meta_path`` waits for ``scipy.linalg`` to be imported, sets that attribute right after the
package's own code ran, and then removes itself.

Nothing is done where ``scipy.linalg`` (or the extension) is already imported, or where SciPy or
the extension cannot be found as a plain file; any failure leaves the ordinary import to Numba.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

NAME = "scipy.linalg.cython_blas"


class _AttachToPackage(importlib.abc.MetaPathFinder):
    """When ``scipy.linalg`` is imported, make ``module`` its ``cython_blas`` attribute: the
    spec the other finders give for the package, with its loader wrapped (``_ThenAttach``)."""

    def __init__(self, module):
        self.module = module
        self.finding = False                             # inside our own find_spec call

    def find_spec(self, name, path=None, target=None):
        if name != "scipy.linalg" or self.finding:
            return None
        self.finding = True
        try:
            spec = importlib.util.find_spec(name)        # the other finders' answer
        finally:
            self.finding = False
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenAttach(spec.loader, self)
        return spec


class _ThenAttach(importlib.abc.Loader):
    """The package's own loader, then ``package.cython_blas = module``; then the finder goes."""

    def __init__(self, loader, finder):
        self.loader, self.finder = loader, finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, package):
        self.loader.exec_module(package)
        if not hasattr(package, "cython_blas"):
            package.cython_blas = self.finder.module
        if self.finder in sys.meta_path:                 # its work is done
            sys.meta_path.remove(self.finder)

    def __getattr__(self, name):                         # get_data, is_package, resources, ...
        return getattr(self.loader, name)


def load():
    """Load ``scipy.linalg.cython_blas`` alone, if nothing has imported it yet. True if done."""
    if NAME in sys.modules or "scipy.linalg" in sys.modules:
        return False
    try:
        import scipy
        folder = os.path.join(os.path.dirname(scipy.__file__), "linalg")
        spec = importlib.machinery.PathFinder.find_spec(NAME, [folder])
        if spec is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            return False
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception:                                    # no SciPy, another layout: Numba imports it
        return False
    sys.modules[NAME] = module
    sys.meta_path.insert(0, _AttachToPackage(module))
    return True
