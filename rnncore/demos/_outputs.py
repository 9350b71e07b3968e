"""Checks of a demo's ``save=`` and ``plot=`` paths made before its training (minutes), shared
by the demos' ``run`` and the CLI's ``--save`` / ``--plot``: a bad path would otherwise fail
only after the demo ran, or a figure would silently take the model file's place."""

import os
import tempfile

from ..io import _file_path, _name_problem, _path_problem, _write_target


def cannot_write_in(folder):
    """Why no file can be created in the existing directory ``folder`` (None if one can): a
    file is created and removed there, the only sure test (``os.access`` says yes to a
    read-only file system, and to root everywhere)."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".rnncore-", suffix=".tmp")
    except OSError as e:
        return f"cannot write in {folder} ({e.strerror})"
    os.close(fd)
    os.unlink(name)
    return None


def save_problem(save):
    """Why the str ``save`` cannot receive the model file (``rnncore.save``'s own test, then
    whether its folder takes a new file), as (error class, text), or None."""
    problem = _path_problem(save)
    if problem is not None:
        return problem
    why = cannot_write_in(os.path.dirname(_write_target(save)))   # (a link's target's folder)
    return (OSError, why) if why else None


def plot_problem(plot, files, demo):
    """Why the str ``plot`` cannot receive the demo's figures ``files`` (a directory, existing
    or to be created), as (error class, text), or None: matplotlib missing, a part of the path
    that is a file, a folder that takes no new file, names too long for its file system, a
    figure's name taken by a directory."""
    if plot == "":
        return ValueError, "expected a directory, existing or to be created, got an empty string"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return ImportError, ('needs matplotlib, which is not installed: pip install -e ".[plot]" '
                             '(in the rnncore repository)')
    folder = found = os.path.abspath(plot)
    while not os.path.lexists(found):                # the part of the path that exists already
        found = os.path.dirname(found)
    if not os.path.isdir(found):
        return ValueError, (f"expected a directory, existing or to be created, got {plot!r} "
                            f"({found} is not a directory)")
    why = cannot_write_in(found)
    if why:
        return OSError, why
    # the names still to be made (folders of the path, then the demo's files) must fit, and a
    # file must not be a directory already: both would fail only after the training
    to_make = os.path.relpath(folder, found).split(os.sep) if folder != found else []
    for name in to_make + list(files):
        problem = _name_problem(found, name, repr(name))
        if problem is not None:
            return problem
    for name in files:
        if os.path.isdir(os.path.join(folder, name)):
            return ValueError, (f"{os.path.join(plot, name)!r} is a directory; the {demo} demo "
                                f"writes its figure there")
    return None


def clash(save, plot, files, demo):
    """Why the model file ``save`` and the figures ``files`` in the folder ``plot`` would take
    each other's place (the model is written first, then the figures), or None. Compared as
    the files that would be written: ``save``'s as ``rnncore.save`` resolves it."""
    model = os.path.realpath(_write_target(save))
    folder = os.path.realpath(plot)
    if model == folder or folder.startswith(model + os.sep):
        return (f"the model file {save!r} would be where the plots' directory {plot!r} goes; "
                f"give them different paths")
    taken = [n for n in files if os.path.realpath(os.path.join(folder, n)) == model]
    if taken:
        return (f"the model file {save!r} is the {demo} demo's plot {taken[0]!r}, which would "
                f"overwrite it; give the model another name")
    return None


def check(save, plot, files, demo):
    """``run``'s check: ``save`` and ``plot`` as strs (or None); an error naming ``save`` /
    ``plot``."""
    if plot is not None:
        try:
            plot = os.fspath(plot)
        except TypeError:
            raise TypeError(f"plot: expected a str or os.PathLike, "
                            f"got {type(plot).__name__}") from None
        plot = os.fsdecode(plot)
        problem = plot_problem(plot, files, demo)
        if problem is not None:
            raise problem[0](f"plot: {problem[1]}")
    if save is None:
        return None, plot
    save = _file_path(save, "save")
    problem = save_problem(save)
    if problem is not None:
        raise problem[0](f"save: {problem[1]}")
    if plot is not None:
        why = clash(save, plot, files, demo)
        if why:
            raise ValueError(f"save / plot: {why}")
    return save, plot
