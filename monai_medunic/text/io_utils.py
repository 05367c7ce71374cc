"""Atomic output directories: write into a temporary sibling, then rename it into place.

Used by the vocabulary builder and the MLM bundle's model export, so that an interrupted or failed run
never leaves a half-written model directory behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from monai_medunic.errors import ConfigurationError

__all__ = ["atomic_directory", "check_output_dir"]


def check_output_dir(out_dir: str | os.PathLike, overwrite: bool) -> str:
    """Return ``out_dir`` as an absolute path; raise if it exists, is not empty and ``overwrite`` is False."""
    out = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise ConfigurationError(f"{out}: output path exists and is not a directory")
        if os.listdir(out) and not overwrite:
            raise ConfigurationError(f"{out}: output directory exists and is not empty (use overwrite / --overwrite)")
    return out


@contextlib.contextmanager
def atomic_directory(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary directory next to ``out_dir``; on success it replaces ``out_dir`` by renames.

    On an exception the temporary directory is removed and ``out_dir`` is left untouched.

    Args:
        out_dir: the final directory.
        overwrite: replace an existing non-empty ``out_dir``.
    """
    out = check_output_dir(out_dir, overwrite)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    backup = None
    if os.path.exists(out):
        check_output_dir(out, overwrite)  # re-check: something may have been written meanwhile
        backup = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
        os.rmdir(backup)
        os.replace(out, backup)
    try:
        os.replace(tmp, out)
    except OSError:
        if backup is not None:
            os.replace(backup, out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
