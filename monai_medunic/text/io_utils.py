"""Atomic outputs: write into a temporary sibling, then rename it into place.

:func:`atomic_directory` is used by the vocabulary builder and the MLM bundle's model export,
:func:`atomic_file` by the Deploy app's SR and JSON writers, so that an interrupted or failed run never
leaves a half-written output behind and never replaces a complete earlier one. A full disk, an exceeded
quota or a read-only file system becomes :class:`~monai_medunic.errors.OutputWriteError` naming the
output (:func:`output_write_error`); the temporary file or folder is removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator

from monai_medunic.errors import ConfigurationError, OutputWriteError

__all__ = ["atomic_directory", "atomic_file", "check_output_dir", "output_write_error", "is_disk_error"]

# errno -> what the user is told (the storage, not the data, is at fault)
_DISK_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "no space left on the device (ENOSPC)",
    errno.EDQUOT: "the disk quota is exceeded (EDQUOT)",
    errno.EROFS: "the file system is read-only (EROFS)",
    errno.EFBIG: "the file is too large for the file system (EFBIG)",
}
# some writers (safetensors, tokenizers) wrap the OS error in their own exception: recognised by its text
_DISK_TEXTS: dict[str, int] = {"no space left on device": errno.ENOSPC, "disk quota exceeded": errno.EDQUOT,
                               "read-only file system": errno.EROFS}


def _disk_errno(err: BaseException) -> int | None:
    for e in (err, err.__cause__, err.__context__):
        if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
            return e.errno
    text = str(err).lower()
    return next((code for t, code in _DISK_TEXTS.items() if t in text), None)


def is_disk_error(err: BaseException) -> bool:
    """Whether ``err`` is a full disk, an exceeded quota or a read-only file system (also when a library wrapped it)."""
    return _disk_errno(err) is not None


def output_write_error(err: BaseException, path: str | os.PathLike, what: str = "output") -> OutputWriteError:
    """:class:`OutputWriteError` for ``err`` raised while writing ``path`` (``what`` says what it is)."""
    code = _disk_errno(err)
    reason = _DISK_ERRNOS.get(code, f"{type(err).__name__}: {err}") if code is not None else f"{type(err).__name__}: {err}"
    return OutputWriteError(f"cannot write the {what}: {reason}; nothing was replaced, earlier files are unchanged",
                            path=path, errno=code)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, what: str = "file") -> Iterator[str]:
    """Yield a temporary path next to ``path``; when the block ends without error it is renamed to ``path``.

    On an error the temporary file is removed and ``path`` (an earlier version of the file) is left as
    it was; an ``OSError`` (a full disk, a read-only file system ...) becomes :class:`OutputWriteError`.

    Args:
        path: the final file.
        what: how the error message names the output (``"DICOM SR"``, ``"checkpoint"`` ...).
    """
    final = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(final))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(final)}.", suffix=".tmp", dir=directory)
        os.close(fd)
    except OSError as err:
        raise output_write_error(err, final, what) from None
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; the output gets the usual permissions
        os.replace(tmp, final)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(err, OSError) or is_disk_error(err):
            raise output_write_error(err, final, what) from None
        raise


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

    On an exception the temporary directory is removed and ``out_dir`` is left untouched; a full disk
    (or quota, or a read-only file system) is raised as :class:`~monai_medunic.errors.OutputWriteError`.

    Args:
        out_dir: the final directory.
        overwrite: replace an existing non-empty ``out_dir``.
    """
    out = check_output_dir(out_dir, overwrite)
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    except OSError as err:
        raise output_write_error(err, out, "output folder") from None
    try:
        yield tmp
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_error(err):
            raise output_write_error(err, out, "output folder") from None
        raise
    backup = None
    if os.path.exists(out):
        check_output_dir(out, overwrite)  # re-check: something may have been written meanwhile
        backup = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
        os.rmdir(backup)
        os.replace(out, backup)
    try:
        os.replace(tmp, out)
    except OSError as err:
        if backup is not None:
            os.replace(backup, out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise output_write_error(err, out, "output folder") from None
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
