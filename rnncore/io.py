"""`save` and `load`: a whole model (architecture and weights) in one ``.npz`` file.

    path = rnncore.save(model, "model.npz")
    model = rnncore.load("model.npz")          # same class tree, same weights, same dtype

The file is an ordinary NumPy ``.npz`` archive (a zip of ``.npy`` arrays; ``np.load`` opens it):

* ``__rnncore__``: a 0-d string array holding JSON::

      {"format": 1,
       "model": {"class": "Sequential", "dtype": "float32", "config": {},
                 "children": [{"class": "LSTM", "dtype": "float32",
                               "config": {"input_size": 2, "hidden_size": 64, ...},
                               "children": []}, ...]},
       "frozen": ["0.weight"]}              # state_dict keys with requires_grad = False

  ``config`` is the module's ``config()`` (its constructor's keyword arguments); a container
  gets its ``children`` positionally, as in ``Sequential(*children)`` and ``Sequencer(module)``.
  ``dtype`` is each module's own: a model that mixes dtypes (``model[1].astype(np.float64)``)
  loads with the same mix.
  A module used a second time (``Sequential(lin, Tanh(), lin)``) is written as
  ``{"same_as": "0."}``, the key prefix of its first use, and loads as that same object again
  (its parameters are stored once, under the first use's keys, as ``state_dict`` lists them).
* one array per ``state_dict`` key (``0.weight_ih_l0``, ...), in the parameter's own dtype, so a
  round trip gives bit-identical outputs.

Safety: ``load`` only builds the module classes rnncore itself exports, looked up by name; it
never evaluates code or unpickles objects (``allow_pickle=False``). It refuses, with a
``ValueError`` naming the problem, a file that is not an rnncore model, a format version it does
not know (``format`` must be the JSON int 1), an unknown class, a bad config, a ``frozen`` that
is not a list of parameter keys, and missing, extra or misshapen arrays. The file holds the
weights, so a module's config must agree with them: the number of parameter values its config
gives is compared with the values stored under its key prefix BEFORE the module is built, so
that a config edited to ``hidden_size: 10**7`` is refused instead of allocating petabytes.
Likewise no array is read before the shapes in the arrays' ``.npy`` headers have been checked
against the architecture, and a header announcing more bytes than its entry holds is refused.

What is not saved: the train / evaluate mode (a loaded model starts in ``training()`` mode, as
any new module does: call ``evaluate()`` for inference), the device (a model saved while on
"cuda" loads on "cpu": call ``.to("cuda")`` again), a recurrent layer's ``remember()`` mode
and carried state, caches of the last forward, and optimizer state. Nor are ties made by
handing two parameters one array (``b.weight.data = a.weight.data``): each is saved under its
own key and loads as an array of its own. A weight shared by reusing the module object
(``Sequential(lin, Tanh(), lin)``) is kept, as described above.
"""

import inspect
import json
import math
import os
import uuid
import zipfile
import zlib

import numpy as np

from . import _checks
from . import containers as _containers
from . import layers as _layers
from . import random as _random
from . import recurrent as _recurrent
from .module import Module

__all__ = ["save", "load"]

FORMAT_VERSION = 1
META_KEY = "__rnncore__"

# The only classes `load` will build, by name: every module rnncore exports.
CLASSES = {name: getattr(mod, name)
           for mod in (_layers, _containers, _recurrent) for name in mod.__all__
           if isinstance(getattr(mod, name), type) and issubclass(getattr(mod, name), Module)}


# -- describe ------------------------------------------------------------------------------
def _json_value(v):
    """NumPy scalars in a config become plain Python numbers for JSON."""
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"cannot store {type(v).__name__} {v!r} in the JSON architecture")


def _describe(module, path, seen=None):
    """The architecture of ``module`` as a JSON-ready dict (recursively); ``seen`` maps the
    modules already described to their key prefix."""
    seen = {} if seen is None else seen
    if id(module) in seen:
        return {"same_as": seen[id(module)]}
    seen[id(module)] = path
    cls = type(module)
    if CLASSES.get(cls.__name__) is not cls:
        raise TypeError(f"model: cannot save {cls.__name__} at {path or 'the root'}: only the "
                        f"rnncore module classes can be saved ({', '.join(sorted(CLASSES))})")
    return {"class": cls.__name__, "dtype": module.dtype.name, "config": dict(module.config()),
            "children": [_describe(c, f"{path}{i}.", seen) for i, c in enumerate(module._children)]}


def _write_target(path):
    """The file ``save`` replaces: ``path``, or the file a symbolic link there points to (the
    link stays); its temporary file goes in that file's folder."""
    return os.path.realpath(path) if os.path.islink(path) else os.path.abspath(path)


def _path_problem(path):
    """Why ``path`` (a str) cannot receive a file, as (OSError or ValueError subclass, text), or
    None where it can. Checked before the temporary file is created, so that the error names
    the user's path rather than the internal ``.<name>.<hex>.tmp``; the CLI's ``--save`` check
    uses the same test, so that a bad path is a usage error before any training."""
    if path == "":
        return ValueError, "expected a file path, got an empty string"
    if path.endswith(tuple(s for s in (os.sep, os.altsep) if s)):
        return ValueError, (f"expected a file path, got {path!r}, which ends with a path "
                            f"separator (a directory)")
    if os.path.isdir(path):
        return IsADirectoryError, f"expected a file path, got {path!r}, which is a directory"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return PermissionError, (f"{path!r} is a file that cannot be written (read-only); "
                                 f"it is left as it is")     # (as open(path, "wb") refuses it)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return ((NotADirectoryError, f"{path!r}: {folder} is not a directory")
                if os.path.lexists(folder) else
                (FileNotFoundError, f"{path!r}: the folder {folder} does not exist"))
    return _name_problem(folder, os.path.basename(path), repr(path))


def _file_path(path, name="path"):
    """``path`` (str, bytes or os.PathLike) as a str that can receive a file (``save``'s
    checks), or the error of ``_path_problem`` naming ``name``: a demo's ``save=`` is checked
    with it before its training."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"{name}: expected a str or os.PathLike, got "
                        f"{type(path).__name__}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    problem = _path_problem(path)
    if problem is not None:
        error, text = problem
        raise error(f"{name}: {text}")
    return path


def _name_problem(folder, name, what):
    """Why the existing directory ``folder`` cannot hold an entry called ``name`` (a name
    longer than its file system takes), as ``_path_problem`` answers, or None."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):          # no pathconf (Windows), or no answer
        return None
    size = len(os.fsencode(name))
    if limit is not None and limit > 0 and size > limit:
        return OSError, (f"{what}: the file name is {size} bytes long, longer than the "
                         f"{limit} this file system takes")
    return None


def save(model, path):
    """Write ``model`` (architecture and weights) to ONE ``.npz`` file at exactly ``path``.

    path: str, bytes or os.PathLike. The file lands at ``path`` as given: unlike ``np.savez``,
        no ``.npz`` is appended when the name lacks it (``load`` reads any name).
    returns the path written, as a str.

    Refused before anything is written, with an error naming ``path``: an empty path, one
    ending with a separator, a directory, a folder that does not exist (``FileNotFoundError``),
    an existing file that cannot be written (``PermissionError``: a read-only file is not
    replaced, as ``open(path, "wb")`` would not write it).
    Refused with a ValueError naming the parameter: NaN or Inf weights, which `load` refuses, so
    such a file could not be loaded back (a diverged model is better caught here than later).

    The write is atomic: the archive goes to a temporary file in the same directory, is flushed
    to disk (fsync) and then renamed over ``path`` (``os.replace``). If anything fails (an
    OSError naming ``path``: a folder that cannot be written, a full disk), the temporary file
    is removed and an existing file at ``path`` is left untouched. A file replaced keeps its
    permissions; where ``path`` is a symbolic link, the file it points to is replaced (a hard
    link to the old file keeps the old contents: the new file is another one).
    """
    if not isinstance(model, Module):
        raise TypeError(f"model: expected a rnncore Module, got {type(model).__name__}")
    path = _file_path(path)
    meta = {"format": FORMAT_VERSION, "model": _describe(model, ""),
            "frozen": [k for k, p in model.named_parameters() if not p.requires_grad]}
    arrays = {k: np.ascontiguousarray(p.data) for k, p in model.named_parameters()}
    for key, a in arrays.items():
        bad = a.size - int(np.isfinite(a).sum())
        if bad:
            raise ValueError(f"model: parameter {key!r} holds {bad} NaN/Inf values; rnncore.load "
                             f"refuses such weights, so the file could not be loaded back "
                             f"(nothing was written to {path!r})")
    arrays[META_KEY] = np.array(json.dumps(meta, default=_json_value))

    target = _write_target(path)
    folder = os.path.dirname(target)
    try:
        mode = os.stat(target).st_mode & 0o7777   # an existing file keeps its permissions
    except OSError:
        mode = None
    # (a short name of its own: ``.<name>.tmp`` made a valid 240-byte name too long to create)
    tmp = os.path.join(folder, f".rnncore-{uuid.uuid4().hex[:12]}.tmp")
    try:                                         # (a kept mode from the start: a 0o600 file's
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL,   # weights are not readable by
                     0o666 if mode is None else mode)             # others while written; umask
    except OSError as e:                                          # applies, as for open())
        raise type(e)(e.errno, f"path: cannot write a file in {folder} for {path!r} "
                               f"({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)              # a file object: numpy adds no suffix
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)                # atomic on POSIX and Windows
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.errno is not None:
            raise type(e)(e.errno, f"path: writing {path!r} failed ({e.strerror}); "
                                   f"a file that was there is unchanged") from None
        raise
    _fsync_dir(folder)
    return path


def _fsync_dir(folder):
    """Make the rename itself durable (POSIX); harmless to skip where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- load ----------------------------------------------------------------------------------
# What reading a damaged or crafted archive can raise: zipfile's and NumPy's errors, zlib.error
# for damaged compressed bytes, RuntimeError for an entry flagged as encrypted or (its subclass
# NotImplementedError) compressed by a method zipfile does not know.
_UNREADABLE = (ValueError, OSError, EOFError, RuntimeError, zipfile.BadZipFile, zlib.error)


def _open(path):
    """The archive at ``path`` as an open ZipFile, and {key: (shape, dtype, entry name)} from
    each entry's .npy header; ValueError for anything unreadable.

    Only the headers are read here: `load` checks these shapes against the architecture before
    it reads (and allocates) any array, and a header may not announce more bytes than its entry
    holds, so a crafted shape such as (10**15,) never reaches an allocation.
    """
    with open(path, "rb") as f:                  # FileNotFoundError etc. pass through as they are
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise ValueError(f"path: {path!r} is not an rnncore model file (it holds a single "
                         f".npy array, not an .npz archive)")
    if not magic.startswith(b"PK\x03\x04"):
        raise ValueError(f"path: {path!r} is not an rnncore model file (not an .npz archive: "
                         f"it starts with {magic!r}, a zip archive with b'PK\\x03\\x04')")
    try:
        z = zipfile.ZipFile(path)
    except _UNREADABLE as e:
        raise ValueError(f"path: {path!r} is corrupt or truncated (not a readable .npz "
                         f"archive: {e})") from None
    entries = z.infolist()
    try:
        _check_entry_sizes(entries, os.path.getsize(path))
    except ValueError as e:
        z.close()
        raise ValueError(f"path: {path!r} is corrupt or crafted: {e}") from None
    headers = {}
    try:
        for entry in entries:
            with z.open(entry.filename) as f:
                version = np.lib.format.read_magic(f)
                shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0(f))
            if dtype.hasobject:
                raise ValueError("it holds Python objects (a pickle), which rnncore never writes")
            if min(shape, default=0) < 0 or math.prod(shape) * dtype.itemsize > entry.file_size:
                raise ValueError(f"its header announces shape {shape} of {dtype}, which its "
                                 f"{entry.file_size:,} bytes cannot hold")
            headers[entry.filename.removesuffix(".npy")] = shape, dtype, entry.filename
    except _UNREADABLE as e:
        z.close()
        raise ValueError(f"path: {path!r} is corrupt (entry {entry.filename!r} cannot be read: "
                         f"{e})") from None
    return z, headers


# Deflate expands at most ~1032-fold; a larger claim is a crafted size, not data.
_DEFLATE_MAX_RATIO = 1032


def _check_entry_sizes(entries, disk_bytes):
    """Make the entries' sizes (the zip directory's word, which a crafted file sets at will)
    bounded by the bytes really on disk, so that the check of each header against its entry's
    ``file_size`` bounds what ``load`` allocates: a stored entry holds what it occupies, a
    deflated one at most ~1032 times that, and all occupy at most the file. (Ratios of other
    methods are unbounded: rnncore and NumPy write stored or deflated entries only.)"""
    occupied = 0
    for entry in entries:
        if entry.compress_type == zipfile.ZIP_STORED:
            bound = entry.compress_size
        elif entry.compress_type == zipfile.ZIP_DEFLATED:
            bound = _DEFLATE_MAX_RATIO * entry.compress_size + 64
        else:
            raise ValueError(f"entry {entry.filename!r} is compressed with method "
                             f"{entry.compress_type}; rnncore reads stored or deflated entries "
                             f"(as np.savez and np.savez_compressed write them)")
        if entry.file_size > bound:
            raise ValueError(f"entry {entry.filename!r} claims {entry.file_size:,} bytes, more "
                             f"than its {entry.compress_size:,} stored bytes can hold")
        occupied += entry.compress_size
    if occupied > disk_bytes:
        raise ValueError(f"its entries claim {occupied:,} stored bytes, more than the file's "
                         f"{disk_bytes:,}")


def _array(z, name, path):
    """The array stored in the entry ``name`` of the open archive ``z``."""
    try:
        with z.open(name) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except _UNREADABLE as e:
        raise ValueError(f"path: {path!r} is corrupt (entry {name!r} cannot be read: "
                         f"{e})") from None


def _meta(z, headers, path):
    """The JSON architecture, read from the archive ``z``; its entry leaves ``headers``."""
    if META_KEY not in headers:
        raise ValueError(f"path: {path!r} is not an rnncore model file: no {META_KEY!r} entry "
                         f"(it holds {sorted(headers)[:8]}); write files with rnncore.save")
    shape, dtype, name = headers.pop(META_KEY)
    if dtype.kind != "U" or shape != ():
        raise ValueError(f"path: {path!r}: the {META_KEY!r} entry must be a JSON string, got "
                         f"an array of dtype {dtype} and shape {shape}")
    raw = _array(z, name, path)
    try:
        meta = json.loads(str(raw))
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"path: {path!r}: the {META_KEY!r} entry is not valid JSON "
                         f"({e})") from None
    if not isinstance(meta, dict) or "format" not in meta or "model" not in meta:
        raise ValueError(f"path: {path!r}: expected JSON with 'format' and 'model', got "
                         f"{str(raw)[:80]!r}")
    fmt = meta["format"]
    if type(fmt) is not int:                             # (True == 1 and 1.0 == 1 in Python)
        raise ValueError(f"path: {path!r}: 'format': expected the int {FORMAT_VERSION}, got "
                         f"{fmt!r} ({type(fmt).__name__})")
    if fmt != FORMAT_VERSION:
        raise ValueError(f"path: {path!r}: unknown format version {fmt!r}; this "
                         f"rnncore reads format {FORMAT_VERSION}")
    frozen = meta.get("frozen", [])
    if not isinstance(frozen, list) or not all(isinstance(k, str) for k in frozen):
        raise ValueError(f"path: {path!r}: 'frozen' must list parameter keys of the model "
                         f"(strings), got {frozen!r}")
    return meta


# Parameter values held by a module class, from its constructor's arguments ``a``, checked as
# the constructor checks them: each class with parameters says its own count
# (``_parameter_count``, beside the layouts in layers.py and recurrent.py); a class not named in
# ``_SIZES`` holds no parameters of its own.
def _sized_by(*names):
    """``_SIZES``' entry for a class whose count takes these positive int arguments."""
    return lambda cls, a: cls._parameter_count(*(_checks.positive_int(a[k], k) for k in names))


def _recurrent_size(cls, a):
    I, H, L = (_checks.positive_int(a[k], k) for k in ("input_size", "hidden_size", "num_layers"))
    return cls._parameter_count(I, H, L, _checks.flag(a["bidirectional"], "bidirectional"))


_SIZES = {"Linear": _sized_by("in_features", "out_features"),
          "Embedding": _sized_by("num_embeddings", "embedding_dim"),
          "RNN": _recurrent_size, "LSTM": _recurrent_size, "GRU": _recurrent_size}


def _param_count(name, config):
    """How many parameter values ``CLASSES[name](**config)`` would hold, worked out without
    building it; None where the config would not build (the constructor then says why)."""
    size = _SIZES.get(name)
    if size is None:
        return 0
    cls = CLASSES[name]
    try:
        bound = inspect.signature(cls).bind(**config)
        bound.apply_defaults()
        return size(cls, bound.arguments)
    except (TypeError, ValueError):
        return None


def _build(desc, where, prefix, sizes, built):
    """A module from its description; ``where`` names the node in messages ('model', 'model.0'),
    ``prefix`` is its key prefix in ``sizes`` ('', '0.'), the number of values of each array
    the file holds: a module without children is built only if its config gives as many
    parameter values as the file holds under its prefix. ``built`` maps the prefixes built so
    far to (module, its recorded dtype): ``same_as`` looks modules up there, and `_own_dtypes`
    gives each module its recorded dtype once the whole tree is built."""
    if isinstance(desc, dict) and set(desc) == {"same_as"}:
        ref = desc["same_as"]
        if not isinstance(ref, str) or ref not in built:
            raise ValueError(f"{where}: 'same_as': expected the key prefix of a module described "
                             f"before it ({sorted(built)}), got {ref!r}")
        return built[ref][0]
    if not isinstance(desc, dict):
        raise ValueError(f"{where}: expected a module description (a JSON object), got {desc!r}")
    missing = [k for k in ("class", "dtype", "config", "children") if k not in desc]
    if missing:
        raise ValueError(f"{where}: module description lacks {missing}")
    name, config, children = desc["class"], desc["config"], desc["children"]
    if not isinstance(name, str) or name not in CLASSES:
        raise ValueError(f"{where}: unknown module class {name!r}; expected one of "
                         f"{sorted(CLASSES)}")
    if not isinstance(config, dict) or not isinstance(children, list):
        raise ValueError(f"{where} ({name}): expected 'config' an object and 'children' a list, "
                         f"got {type(config).__name__} and {type(children).__name__}")
    try:
        dtype = _checks.float_dtype(desc["dtype"], "dtype")
    except TypeError as e:
        raise ValueError(f"{where} ({name}): {e}") from None
    if not children:
        needs = _param_count(name, config)
        held = sorted(k for k in sizes if k.startswith(prefix))
        values = sum(sizes[k] for k in held)
        if needs is not None and needs != values:
            raise ValueError(f"{where} ({name}): config {config} gives {needs:,} parameter "
                             f"values, the file holds {values:,} "
                             f"{f'under {prefix!r} ' if prefix else ''}({held[:8]}): the "
                             f"architecture does not match the stored weights")
    kids = [_build(c, f"{where}.{i}", f"{prefix}{i}.", sizes, built)
            for i, c in enumerate(children)]
    try:
        module = CLASSES[name](*kids, dtype=dtype, **config)     # converts kids to its dtype
        built[prefix] = module, dtype
        return module
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where} ({name}): cannot rebuild it from config {config} and "
                         f"{len(kids)} children: {e}") from None


def _own_dtypes(built):
    """Give every module its own recorded dtype again: a container's constructor converts its
    children to the container's dtype, but a saved model may mix dtypes (``model[1].astype(
    np.float64)`` inside a float32 Sequential), and the round trip must keep them. Each module
    is converted alone (a leaf by ``astype``, a container only in its own ``dtype``: containers
    hold no parameters), so the order does not matter and a shared module is done once."""
    for module, dtype in built.values():
        if module.dtype == dtype:
            continue
        if not module._children:
            module.astype(dtype)
        else:
            module.dtype = dtype                     # its children keep their own
            module._on_astype(dtype)


def load(path):
    """Rebuild the model written by `save` at ``path``: architecture, dtype, weights and frozen
    parameters (``requires_grad``). Each module gets the dtype it was saved with, so a model
    that mixes dtypes round-trips too. ``path``: str, bytes or os.PathLike, as for `save`.

    Raises ``ValueError`` for any file that is not a valid rnncore model (weights that are NaN
    or Inf included), saying what is wrong; for an array, which key, the expected and the found
    shape. A missing file raises ``FileNotFoundError`` as ``open`` does; an empty path or one
    that ends with a path separator ``ValueError``, a directory ``IsADirectoryError``, each
    naming ``path`` (as `save` refuses them). The global
    ``rnncore.random`` stream is left as it was (the fresh layers' initial weights are drawn
    from a throwaway generator, then overwritten).
    """
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)                 # as save does (zipfile reads bytes as data)
    if path == "" or path.endswith(tuple(s for s in (os.sep, os.altsep) if s)) \
            or os.path.isdir(path):              # (what save refuses, named as save names it)
        error, text = _path_problem(path)
        raise error(f"path: {text}")
    z, headers = _open(path)
    with z:
        meta = _meta(z, headers, path)

        # Build with a throwaway generator: the initial weights are overwritten anyway, and the
        # user's seeded stream (weight init, dropout) must not move because a file was read.
        with _random.private_stream():
            sizes = {k: math.prod(shape) for k, (shape, _, _) in headers.items()}
            built = {}
            model = _build(meta["model"], "model", "", sizes, built)
            _own_dtypes(built)

        own = dict(model.named_parameters())
        missing, extra = sorted(set(own) - set(headers)), sorted(set(headers) - set(own))
        if missing or extra:
            raise ValueError(f"path: {path!r}: the arrays do not fit the architecture in the "
                             f"file: missing {missing}, unexpected {extra}")
        for key, p in own.items():
            shape, dtype, _ = headers[key]
            if shape != p._data.shape or dtype != p._data.dtype:
                raise ValueError(f"path: {path!r}: array {key!r} has shape {shape} and dtype "
                                 f"{dtype}, the architecture expects {p._data.shape} "
                                 f"{p.data.dtype}")
        arrays = {key: _array(z, headers[key][2], path) for key in own}
    try:
        model.load_state_dict(arrays)                    # refuses NaN / Inf, say
    except ValueError as e:
        raise ValueError(f"path: {path!r}: {e}") from None
    frozen = meta.get("frozen", [])                      # a list of str (``_meta``)
    if not set(frozen) <= set(own):
        raise ValueError(f"path: {path!r}: 'frozen' must list parameter keys of the model, "
                         f"got {frozen!r}")
    for key, p in own.items():
        p.requires_grad = key not in frozen
    return model
