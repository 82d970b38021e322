"""How segkd writes what its commands produce: never over an earlier output, only into a folder proven
writable before any work, and every file atomically.

* :func:`unused_path`: the policy for a command's output name (``predict``/``report`` folders, ``export``
  files, ``eval`` folders, ``bench`` files, demo folders): an output that already exists is never replaced;
  the new one is numbered ``NAME-2``, ``NAME-3`` ... (``best-2.onnx``), and the command says where it went.
* :func:`check_writable`: one line naming the folder (:class:`OutputNotWritable`, exit code 2) when the
  output cannot be written there, checked before any work (nothing is created by the check).
* :func:`write_bytes` / :func:`write_text` / :func:`write_rendered`: the one atomic writer (temporary file
  in the same folder, fsync, rename, the temporary file removed on failure), used for checkpoints
  (:mod:`segkd.checkpoint_io`) and every other file: JSON, YAML, Markdown, CSV, PNG, plots, ONNX,
  TorchScript. A full disk raises :class:`DiskFullError` naming the file; no partial or 0-byte file and no
  temporary file is left.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

PathLike = str | os.PathLike[str]

_written = 0  # files written by this process (the CLI tells an interrupted command's user whether any were)


class OutputNotWritable(ValueError):
    """The output folder cannot be written (read-only, not a folder, no permission); one line names it."""


class DiskFullError(OSError):
    """No space left while writing a file; an earlier file at that path is intact, nothing partial is left."""


def files_written() -> int:
    """How many files this process has written through this module (see :mod:`segkd.cli`)."""
    return _written


def _taken(path: Path) -> bool:
    """An output name is taken by a file or a non-empty folder (an empty folder holds no earlier output)."""
    if path.is_dir():
        return any(path.iterdir())
    return path.exists() or path.is_symlink()


def numbered(path: Path, n: int, folder: bool = False) -> Path:
    """``path`` with ``-n`` appended: at the end of a folder's name (``predictions-2``,
    ``best_multiscale_0.5-1-2``), before a file's last suffix (``best-2.onnx``); ``n == 1`` is ``path``."""
    if n == 1:
        return path
    return path.with_name(f"{path.name}-{n}" if folder else f"{path.stem}-{n}{path.suffix}")


def unused_path(
    path: PathLike,
    folder: bool = False,
    related: Callable[[Path], Iterable[Path]] | None = None,
    command: str | None = None,
) -> Path:
    """``path``, or the first of ``path-2``, ``path-3`` ... that is not taken (see :func:`numbered`;
    ``folder``: ``path`` names a folder). A file or a non-empty folder takes a name.

    ``related``: other outputs written with a candidate (``best.int8.onnx`` with ``best.onnx``); the name is
    taken when any of them is. ``command``: when set and the name was taken, say on stdout where the new
    output goes (``segkd predict: predictions already exists (kept); writing to predictions-2``).
    """
    path = Path(path)
    related = related or (lambda _: ())
    n = 1
    while _taken(numbered(path, n, folder)) or any(_taken(p) for p in related(numbered(path, n, folder))):
        n += 1
    chosen = numbered(path, n, folder)
    if command and chosen != path:
        print(f"segkd {command}: {path} already exists (kept); writing to {chosen}", flush=True)
    return chosen


def check_writable(folder: PathLike, what: str = "the output folder", hint: str = "") -> Path:
    """Prove files can be created in ``folder`` (or, when it does not exist yet, in the folder that would
    hold it), without creating anything; :class:`OutputNotWritable` names the folder otherwise.

    ``what`` names the folder in the message (``the run directory``); ``hint`` says how to choose another
    (``choose a writable output_dir=...``).
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file, not a folder")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise OutputNotWritable(_unwritable_message(folder, what, hint, err)) from None
    return folder


def new_output(
    path: PathLike,
    command: str,
    folder: bool = False,
    related: Callable[[Path], Iterable[Path]] | None = None,
    option: str = "--out",
) -> Path:
    """Where a command writes its output: :func:`unused_path` (never over an earlier output; says where the
    new one goes), proven writable by :func:`check_writable` before any work (``option``: the flag that
    chooses another place, named in the message)."""
    chosen = unused_path(path, folder, related, command)
    check_writable(chosen if folder else chosen.parent, hint=f"choose a writable {option}")
    return chosen


def make_writable_dir(folder: PathLike, what: str = "the output folder", hint: str = "") -> Path:
    """Create ``folder`` (and its parents) and prove files can be written in it; :class:`OutputNotWritable`
    names it otherwise (the message of :func:`check_writable`)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OutputNotWritable(_unwritable_message(folder, what, hint, err)) from None
    return folder


def _unwritable_message(folder: Path, what: str, hint: str, err: OSError) -> str:
    return f"cannot write to {what} {folder}: {err.strerror or err}" + (f"; {hint}" if hint else "")


def write_bytes(
    path: PathLike,
    data: bytes | bytearray | memoryview,
    before_replace: Callable[[Path], None] | None = None,
    kept: str = "no partial file was left and an earlier file of that name is intact",
) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsynced, renamed over
    ``path``, the folder fsynced; on any failure the temporary file is removed and ``path`` is as it was.

    ``before_replace(path)`` runs after the data is safely on disk, just before the rename (the checkpoint
    writer keeps ``previous.pt`` there). ``kept``: what the :class:`DiskFullError` message says is intact.
    """
    global _written
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with _open_for_write(fd, path) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if before_replace is not None:
            before_replace(path)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        _remove(tmp)
        one_line = _one_line(err, path, kept)
        if one_line is err:
            raise
        raise one_line from None
    except BaseException:  # interrupted: the target is as it was
        _remove(tmp)
        raise
    _written += 1
    return path


def _remove(tmp: str | None) -> None:
    if tmp is not None:
        Path(tmp).unlink(missing_ok=True)


def _one_line(err: OSError, path: Path, kept: str) -> OSError | ValueError:
    """A full disk or a folder that stopped being writable as one line naming the file; else ``err``."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(err.errno, f"no space left on the disk while writing {path}; {kept}")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputNotWritable(f"cannot write {path}: {err.strerror}; {kept}")
    return err


def write_text(path: PathLike, text: str, **options: Any) -> Path:
    """:func:`write_bytes` of ``text`` encoded as UTF-8."""
    return write_bytes(path, text.encode("utf-8"), **options)


def write_rendered(path: PathLike, render: Callable[[IO[bytes]], object], **options: Any) -> Path:
    """Render into memory with ``render(buffer)`` (``image.save(buf, format="PNG")``, ``fig.savefig(buf,
    format="png")``, ``torch.jit.save(module, buf)``), then :func:`write_bytes` the result."""
    buffer = io.BytesIO()
    render(buffer)
    return write_bytes(path, buffer.getbuffer(), **options)


def write_figure(path: PathLike, fig: Any, **savefig: Any) -> Path:
    """A matplotlib figure as a PNG written atomically (``savefig`` options such as ``dpi``); the figure is
    closed whether or not the write succeeds."""
    import matplotlib.pyplot as plt

    try:
        return write_rendered(path, lambda buffer: fig.savefig(buffer, format="png", **savefig))
    finally:
        plt.close(fig)


def _open_for_write(fd: int, path: Path) -> io.BufferedWriter:
    """The file object every output is written through (one seam for fault-injection tests)."""
    return os.fdopen(fd, "wb")


def _fsync_dir(folder: Path) -> None:
    """Persist a rename (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
