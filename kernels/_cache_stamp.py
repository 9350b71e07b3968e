"""Numba's on-disk cache, made to notice an edit of any file of this package, and read without
setting up Numba's compiler.

Numba stamps each cached function with its own source file's contents (older versions: the
file's time and size) and reloads the machine code while that stamp holds. But the machine code
of a kernel holds a copy of everything it calls: ``lstm_tiled._gemm_tile`` carries
``_gemm.mac``'s vector code, ``lstm._forward_core`` carries ``_common``'s activations. After an
edit of ``_gemm.py`` alone, a process that loads ``lstm_tiled`` from the cache runs the old
``mac``: a stale kernel, silently, on the machine of whoever edits or pulls a change (a fresh
install has an empty cache and is not affected).

``install()`` puts a locator of ours before Numba's own: for a function defined in this
package it finds the same cache directory as Numba would, and stamps with Numba's stamp plus a
digest of every ``.py`` file of the package. Any edit of any of them makes every cached kernel
stale, and each recompiles once on its next use. Functions elsewhere (``rnncore``'s own) are
left to Numba. This reaches into ``numba.core.caching`` (its list of locator classes, the same
since Numba 0.49); where that is not as expected, nothing is installed and Numba's per-file
stamps stay: likewise where ``NUMBA_CACHE_LOCATOR_CLASSES`` chooses the locators, or where the
package is not a folder of files (imported from a zip archive).

``light_load(folder)`` makes the cached functions defined in ``folder`` load with only what
loading needs. Before it reads a cached function, Numba sets up its whole compiler (it calls
``refresh()`` on its target context: ~40 modules of typing and lowering rules imported and
~2300 registries installed), which loading machine code from the disk never uses: it needs the
code generator and Numba's runtime (``rtsys``), set up here instead. A warm process reaches its
first training step 0.07-0.1 s sooner (the seed model: 0.34 s against 0.43-0.46 on a 2-core
Zen 4, ``benchmarks/startup.py``). Should a function be compiled after all (an empty cache, a
new signature), Numba's compiler sets itself up then, as it always does. Functions elsewhere (a
user's) load as Numba loads them. Off with ``RNNCORE_LIGHT_LOAD=0``; not installed where
``numba.core.caching.Cache`` is not as expected.
"""

import hashlib
import os

_HERE = os.path.dirname(os.path.abspath(__file__))
_LIGHT_FOLDERS = set()          # folders whose cached functions load without the typing set-up


def package_digest(folder=_HERE):
    """sha256 over the names and contents of the ``.py`` files directly in ``folder`` (not
    hidden ones: an editor's lock file ``.#lstm.py`` may be a dangling link). OSError where
    the folder cannot be listed (a package imported from a zip archive)."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith(".py") and not name.startswith(".") and os.path.isfile(path):
            with open(path, "rb") as f:
                source = f.read()
            digest.update(b"%d:%s\0%d:" % (len(name), name.encode(), len(source)))
            digest.update(source)
    return digest.hexdigest()


def install():
    """Put the package-wide stamp in front of Numba's locators (once; True if it is in place)."""
    try:
        from numba.core import caching, config
        impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl   # (older Numbas)
        base, classes = caching._CacheLocator, impl._locator_classes
    except (ImportError, AttributeError):
        return False
    if not isinstance(classes, list) or getattr(config, "CACHE_LOCATOR_CLASSES", None):
        return False                     # (NUMBA_CACHE_LOCATOR_CLASSES: Numba's list is not read)
    if any(getattr(c, "_rnncore_stamp", False) for c in classes):
        return True
    try:
        digest = package_digest()
    except OSError:
        return False

    class PackageStampLocator(base):
        """Numba's own locator for the file, with the package's digest added to its stamp."""

        _rnncore_stamp = True

        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):                    # (Numba reads ``_py_file`` in a warning)
            if name == "_inner":                         # (not set yet: a copy being made)
                raise AttributeError(name)
            return getattr(self._inner, name)

        def ensure_cache_path(self):
            self._inner.ensure_cache_path()

        def get_cache_path(self):
            return self._inner.get_cache_path()

        def get_disambiguator(self):
            return self._inner.get_disambiguator()

        def get_source_stamp(self):
            return (self._inner.get_source_stamp(), "rnncore.kernels", digest)

        @classmethod
        def from_function(cls, py_func, py_file):
            if os.path.dirname(os.path.abspath(py_file)) != _HERE:
                return None
            for other in classes:
                if other is not cls:
                    inner = other.from_function(py_func, py_file)
                    if inner is not None:
                        return cls(inner)
            return None

    classes.insert(0, PackageStampLocator)
    return True


def light_load(folder):
    """Let the cached functions defined in ``folder`` load without Numba's compiler set-up (the
    module's docstring says why that is safe). Installed once, for every folder given; True if
    it is in place."""
    if os.environ.get("RNNCORE_LIGHT_LOAD", "1").strip() == "0":
        return False
    try:
        from numba.core import caching
        from numba.core.runtime import rtsys
        cache = caching.Cache
        numbas_own = cache.load_overload
        cache._guard_against_spurious_io_errors, cache._load_overload   # (what ours calls)
    except (ImportError, AttributeError):
        return False
    _LIGHT_FOLDERS.add(os.path.abspath(folder))
    if getattr(numbas_own, "_rnncore_light", False):
        return True

    def load_overload(self, sig, target_context):
        code = getattr(getattr(self, "_py_func", None), "__code__", None)
        if code is None or os.path.dirname(os.path.abspath(code.co_filename)) not in _LIGHT_FOLDERS:
            return numbas_own(self, sig, target_context)
        rtsys.initialize(target_context)      # what refresh() does first; the rest is typing
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)

    load_overload._rnncore_light = True
    cache.load_overload = load_overload
    return True
