"""The one place where segkd reads and writes checkpoint files.

Reading (:func:`read_checkpoint`): ``torch.load(weights_only=True)`` and nothing else, so a file from a
user can hold tensors, numbers, strings, lists, tuples and dicts but can never run code; a file that needs
more is refused with one line (:class:`UnsafeCheckpointError`). A file that is empty, truncated, not a
PyTorch file, or whose stored checksum does not match its tensors is refused with one line naming it
(:class:`CorruptCheckpointError`). A torch older than 2.6 can run code from a crafted file even under
``weights_only=True`` (CVE-2025-32434): with one, every read is refused (:class:`UnsafeTorchError`).
Every reader in segkd (training resume, ``eval``, ``export``, ``predict``, ``bench``, teachers, pretrained
backbones, the KA auto-encoder, teacher-cache entries) goes through this function.

Writing (:func:`write_checkpoint`): the state gets a SHA-256 ``checksum`` over every value (tensor bytes,
dtypes, shapes, keys and plain values), is serialised in memory, written to a temporary file in the same
folder, fsynced and renamed over the target (atomic on POSIX), so a crash or a full disk mid-write never
leaves a half-written checkpoint; with ``keep_previous`` the file it replaces stays as ``previous.pt``
beside it (a hard link taken before the rename, so the target name always exists), but only when
:func:`read_checkpoint` accepts that file (it is read back once per save): a damaged file is replaced
without being kept, so it never takes the place of a good ``previous.pt`` (e.g. after
``train.resume=auto`` fell back to it). A full disk raises :class:`DiskFullError` naming the file, with the
earlier checkpoint intact. The atomic write itself is :func:`segkd.outputs.write_bytes`, the writer of
every file segkd produces.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from segkd.outputs import DiskFullError, write_bytes

CHECKSUM_KEY = "checksum"
PREVIOUS_NAME = "previous.pt"
SAFE_TORCH = (2, 6)  # first torch whose weights_only unpickler cannot be made to run code (CVE-2025-32434)
__all__ = ["CheckpointReadError", "CorruptCheckpointError", "DiskFullError", "UnsafeCheckpointError",
           "read_checkpoint", "state_checksum", "write_checkpoint"]


class CheckpointReadError(ValueError):
    """A checkpoint file that segkd refuses to read; the message names the file and the reason."""


class UnsafeCheckpointError(CheckpointReadError):
    """The file holds pickled objects other than tensors and plain containers (it could run code)."""


class CorruptCheckpointError(CheckpointReadError):
    """The file is empty, truncated, not a PyTorch file, or its checksum does not match its contents."""


class UnsafeTorchError(CheckpointReadError):
    """The installed torch can run code from a crafted file even with ``weights_only=True``."""



def _hash_value(digest: Any, value: Any) -> None:
    """Feed ``value`` into ``digest`` canonically (type tags, keys in insertion order, tensor bytes)."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)}".encode())
        for key, item in value.items():
            digest.update(repr(key).encode())
            _hash_value(digest, item)
    elif isinstance(value, list | tuple):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _hash_value(digest, item)
    else:
        digest.update(f"V{type(value).__name__}:{value!r}".encode())


def state_checksum(state: Mapping[str, Any]) -> str:
    """SHA-256 over every entry of ``state`` except the ``checksum`` entry itself."""
    digest = hashlib.sha256()
    _hash_value(digest, {k: v for k, v in state.items() if k != CHECKSUM_KEY})
    return digest.hexdigest()


def require_safe_torch() -> None:
    """Raise :class:`UnsafeTorchError` (one line) when torch is older than :data:`SAFE_TORCH`.

    Compared by major.minor (``2.6.0a0+git...`` builds count as 2.6)."""
    version = str(torch.__version__)
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None or (int(match.group(1)), int(match.group(2))) < SAFE_TORCH:
        raise UnsafeTorchError(
            f"segkd reads no checkpoint file with torch {version}: torch before 2.6 can run code from a "
            "crafted file even with weights_only=True (CVE-2025-32434); install torch>=2.6"
        )


def read_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """Load ``path`` with ``weights_only=True``; verify the checksum when the file carries one.

    Raises FileNotFoundError, :class:`UnsafeCheckpointError`, :class:`CorruptCheckpointError` or
    :class:`UnsafeTorchError`, each with one line naming the file or the torch version. Files without a
    checksum (other tools' checkpoints) load unverified.
    """
    require_safe_torch()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CorruptCheckpointError(f"{path}: the file is empty (an interrupted copy or write?)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = re.search(r"GLOBAL:? ([\w.]+)", str(err))
        if blocked:  # a pickled object that would run code or import a module on loading
            raise UnsafeCheckpointError(
                f"{path} contains objects that are not tensors; segkd never unpickles arbitrary objects "
                f"(found {blocked.group(1)})"
            ) from None
        raise CorruptCheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({short_error(err)})"
        ) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise CorruptCheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated, damaged or another format: "
            f"{short_error(err)})"
        ) from None
    if isinstance(obj, dict) and CHECKSUM_KEY in obj:
        expected = obj[CHECKSUM_KEY]
        if not isinstance(expected, str) or state_checksum(obj) != expected:
            raise CorruptCheckpointError(
                f"{path}: checksum mismatch, the file was damaged after it was written"
            )
    return obj


def refusal_reason(err: CheckpointReadError, path: str | os.PathLike[str]) -> str:
    """The reason of a :func:`read_checkpoint` refusal without the file name it starts with."""
    return str(err).removeprefix(f"{path}: ").removeprefix(f"{path} ")


def short_error(err: BaseException) -> str:
    """``Type: first line of the message`` (at most 160 characters), for one-line errors."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


TRAINING_KEPT = ("the last good checkpoint there is intact (free some space, then resume with "
                 "train.resume=auto)")


def write_checkpoint(
    state: dict[str, Any],
    path: str | os.PathLike[str],
    keep_previous: bool = False,
    kept: str = TRAINING_KEPT,
) -> Path:
    """Add a checksum to ``state`` and write it atomically to ``path`` (see the module docstring).

    ``keep_previous``: the file being replaced stays readable as ``previous.pt`` in the same folder.
    ``kept``: what the :class:`DiskFullError` of a full disk says is intact and how to continue.
    """
    state = {**state, CHECKSUM_KEY: state_checksum(state)}
    buffer = io.BytesIO()
    torch.save(state, buffer)  # in memory first: a write error is then a plain OSError, not torch's
    return write_bytes(
        path,
        buffer.getbuffer(),
        before_replace=_keep_previous if keep_previous else None,
        kept=kept,
    )


def _keep_previous(path: Path) -> None:
    """Keep the file ``path`` is about to replace as ``previous.pt``, only when it reads back intact: a
    damaged file never takes the place of a good ``previous.pt`` (e.g. after train.resume=auto fell back
    to it)."""
    if path.is_file() and _readable(path):
        _link_previous(path)


def _readable(path: Path) -> bool:
    """True when :func:`read_checkpoint` accepts ``path`` (worth keeping as ``previous.pt``)."""
    try:
        read_checkpoint(path)
    except CheckpointReadError:
        return False
    return True


def _link_previous(path: Path) -> None:
    """Make ``previous.pt`` (beside ``path``) the file currently at ``path`` (hard link, atomic rename)."""
    if not path.is_file():
        return
    previous = path.with_name(PREVIOUS_NAME)
    staging = path.with_name(f".{PREVIOUS_NAME}.link")
    staging.unlink(missing_ok=True)
    try:
        os.link(path, staging)
    except OSError:  # file systems without hard links: copy instead
        staging.write_bytes(path.read_bytes())
    os.replace(staging, previous)
