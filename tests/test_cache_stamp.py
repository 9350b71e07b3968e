"""kernels._cache_stamp: an edit of any file of the package makes every cached kernel stale."""

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import kernels
from kernels import _cache_stamp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Two files of a copy of the package: ``twice`` (in b) carries a copy of ``value`` (in a),
# the way ``lstm_tiled._gemm_tile`` carries ``_gemm.mac``.
PROBE_A = "from numba import njit\n\n\n@njit(cache=True)\ndef value():\n    return {}\n"
PROBE_B = textwrap.dedent("""\
    from numba import njit

    from ._probe_a import value


    @njit(cache=True)
    def twice():
        return 2 * value()
    """)
RUN = textwrap.dedent("""\
    import sys
    sys.path.insert(0, sys.argv[1])
    import kernels
    assert kernels.__file__.startswith(sys.argv[1]), kernels.__file__
    from kernels import _probe_b
    print(_probe_b.twice(), len(_probe_b.twice.stats.cache_hits))
    """)


def test_the_stamp_is_installed_when_kernels_is_imported():
    from numba.core import caching
    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl
    ours = [c for c in impl._locator_classes if getattr(c, "_rnncore_stamp", False)]
    assert len(ours) == 1 and impl._locator_classes[0] is ours[0]
    assert _cache_stamp.install()                                  # a second call adds nothing
    assert [c for c in impl._locator_classes if getattr(c, "_rnncore_stamp", False)] == ours


def test_digest_covers_every_python_file_and_nothing_else(tmp_path):
    for name, text in (("a.py", "x = 1\n"), ("b.py", "y = 2\n"), ("notes.txt", "z")):
        (tmp_path / name).write_text(text)
    first = _cache_stamp.package_digest(str(tmp_path))
    (tmp_path / "notes.txt").write_text("changed")
    assert _cache_stamp.package_digest(str(tmp_path)) == first
    (tmp_path / "b.py").write_text("y = 3\n")
    assert _cache_stamp.package_digest(str(tmp_path)) != first
    (tmp_path / "b.py").write_text("y = 2\n")
    assert _cache_stamp.package_digest(str(tmp_path)) == first
    (tmp_path / "c.py").write_text("")                          # a new, empty file counts too
    assert _cache_stamp.package_digest(str(tmp_path)) != first
    second = _cache_stamp.package_digest(str(tmp_path))
    os.symlink(str(tmp_path / "gone"), str(tmp_path / ".#a.py"))    # an editor's lock: dangling
    os.mkdir(str(tmp_path / "folder.py"))
    assert _cache_stamp.package_digest(str(tmp_path)) == second


def test_a_package_in_a_zip_archive_imports_without_the_stamp(tmp_path):
    # The digest needs a folder of files; from a zip archive ``import kernels`` had failed
    # (NotADirectoryError). Numba's per-file stamps stay there.
    archive = str(tmp_path / "k.zip")
    folder = os.path.dirname(kernels.__file__)
    with zipfile.ZipFile(archive, "w") as z:
        for name in os.listdir(folder):
            if name.endswith(".py"):
                z.write(os.path.join(folder, name), "kernels/" + name)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import kernels; "
            "assert kernels.__file__.startswith(sys.argv[1]); "
            "print(kernels._cache_stamp.install())")
    out = subprocess.run([sys.executable, "-c", code, archive], cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False"]


def test_an_edit_of_a_callee_file_recompiles_its_callers(tmp_path):
    # Numba alone stamps ``twice`` with _probe_b.py's contents only: after an edit of
    # _probe_a.py it would load the cached ``twice`` and print the old value's double.
    root = tmp_path / "pkg"
    package = root / "kernels"
    shutil.copytree(os.path.dirname(kernels.__file__), package,
                    ignore=shutil.ignore_patterns("__pycache__", "cuda"))
    (package / "_probe_a.py").write_text(PROBE_A.format(1))
    (package / "_probe_b.py").write_text(PROBE_B)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), RNNCORE_COMPILE_AHEAD="0")

    def run():
        out = subprocess.run([sys.executable, "-c", RUN, str(root)], env=env, cwd=str(tmp_path),
                             capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, out.stderr
        value, hits = out.stdout.split()
        return int(value), int(hits)

    assert run() == (2, 0)                                       # compiled, written to the cache
    assert run() == (2, 1)                                       # the cache works: loaded
    (package / "_probe_a.py").write_text(PROBE_A.format(5))
    assert run() == (10, 0)                                      # stale: compiled again
    assert run() == (10, 1)
