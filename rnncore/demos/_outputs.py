"""Checks of a demo's ``save=`` and ``plot=`` paths made before its training (minutes), shared
by the demos' ``run`` and the CLI's ``--save`` / ``--plot``: a bad path would otherwise fail
only after the demo ran, or a figure would silently take the model file's place."""

import os
import tempfile

from ..io import _file_path, _path_problem, _write_target


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
    """``run``'s check: ``save`` as a str (or None); an error naming ``save`` / ``plot``."""
    if save is None:
        return None
    save = _file_path(save, "save")
    problem = save_problem(save)
    if problem is not None:
        raise problem[0](f"save: {problem[1]}")
    if plot is not None:
        why = clash(save, os.fspath(plot), files, demo)
        if why:
            raise ValueError(f"save / plot: {why}")
    return save
