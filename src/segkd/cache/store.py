"""On-disk layout of a teacher cache and its atomic completion.

    DIR/writing.pt             fingerprint of the cache being written (written first)
    DIR/<pool>/<index>.pt      one entry per image: {"name", "size": [H, W], "maps": {key: encoded map}}
    DIR/manifest.pt            fingerprint, pools, keys, codec, sizes, measured error, the SHA-256 of
                               every entry file (written LAST)

Every file goes through :func:`segkd.checkpoint_io.write_checkpoint` (temporary file, fsync, rename, a
SHA-256 checksum over the tensors) and is read with :func:`segkd.checkpoint_io.read_checkpoint`
(``weights_only=True``, checksum verified): entries are plain tensors, strings and numbers, so a cache
from someone else never runs code. The manifest records each entry file's SHA-256 when it is written;
a run checks every entry of the pools it reads against it when it opens the cache
(:meth:`TeacherCache.verify`, before the first step; hashing, nothing is unpickled), so a damaged or
replaced entry is refused naming it instead of stopping training when it is drawn. The cache is valid
only once ``manifest.pt`` exists, which the writer renames into place after the last entry: a killed
writer leaves entries and ``writing.pt`` but no manifest, which a run refuses and a second
``segkd cache-teacher`` resumes (:mod:`segkd.cache.writer`), re-writing damaged entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from segkd.cache.codec import decode
from segkd.cache.fingerprint import file_sha256
from segkd.checkpoint_io import CheckpointReadError, read_checkpoint, refusal_reason, write_checkpoint

MANIFEST = "manifest.pt"
WRITING = "writing.pt"
FORMAT_VERSION = 2  # 2: the manifest holds every entry file's SHA-256 (``sha256``: {pool: [hex, ...]})
ENTRY_KEYS = ("name", "size", "maps")
# What a full disk keeps (the message of segkd.outputs.DiskFullError for a cache file).
KEPT_ON_FULL_DISK = ("the entries written so far are intact (free some space, then run segkd cache-teacher "
                     "again to finish the cache)")


class CacheIncompleteError(ValueError):
    """The folder holds no finished cache (no manifest): a writer was killed or never ran."""


class CacheDamagedError(ValueError):
    """Entries of a finished cache are missing, damaged or replaced; one line naming the first."""


def entry_path(root: Path, pool: str, index: int) -> Path:
    return root / pool / f"{index:07d}.pt"


def write_entry(root: Path, pool: str, index: int, entry: dict[str, Any]) -> Path:
    return write_checkpoint(entry, entry_path(root, pool, index), kept=KEPT_ON_FULL_DISK)


def entry_problem(root: Path, pool: str, index: int, sha256: str | None = None) -> str | None:
    """Why entry ``index`` of ``pool`` cannot be used, or None when it is intact.

    With ``sha256`` (the manifest's) the file's hash decides and nothing is unpickled; without it (an
    interrupted write, whose entries have no recorded hash) the entry is read with the weights-only
    reader, which verifies its embedded checksum and refuses anything but tensors and plain values."""
    path = entry_path(root, pool, index)
    if not path.is_file():
        return "missing"
    if sha256 is not None:
        return None if file_sha256(path) == sha256 else "SHA-256 differs from the manifest's"
    try:
        entry = read_checkpoint(path)
    except CheckpointReadError as err:
        return refusal_reason(err, path)
    if not isinstance(entry, dict) or any(key not in entry for key in ENTRY_KEYS):
        return f"not a cache entry (needs {', '.join(ENTRY_KEYS)})"
    return None


def damaged_entries(root: Path, pool: str, count: int, sums: list[str] | None = None) -> dict[int, str]:
    """``{index: problem}`` for every unusable entry of ``pool`` (see :func:`entry_problem`)."""
    found = {}
    for index in range(count):
        problem = entry_problem(root, pool, index, sums[index] if sums is not None else None)
        if problem is not None:
            found[index] = problem
    return found


class TeacherCache:
    """A finished cache folder: its manifest and its entries (decoded to float32 maps)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            writing = self.root / WRITING
            state = "a cache write was interrupted" if writing.is_file() else "no teacher cache there"
            raise CacheIncompleteError(
                f"teacher cache {self.root} is not complete ({state}); run `segkd cache-teacher CONFIG` "
                "to write or finish it"
            )
        self.manifest: dict[str, Any] = read_checkpoint(manifest)
        found = self.manifest.get("format")
        if found == 1:
            raise CacheIncompleteError(
                f"teacher cache {self.root} was written without entry checksums (format 1); run "
                "`segkd cache-teacher CONFIG` once to check its entries and record them"
            )
        if found != FORMAT_VERSION:
            raise CacheIncompleteError(f"teacher cache {self.root}: unknown format {found}")

    @property
    def keys(self) -> list[str]:
        return list(self.manifest["keys"])

    def count(self, pool: str) -> int:
        pools = self.manifest["pools"]
        if pool not in pools:
            raise CacheIncompleteError(
                f"teacher cache {self.root} holds no images of '{pool}' (it has {', '.join(pools)}); "
                f"write it with `segkd cache-teacher CONFIG --split {pool}`"
            )
        return int(pools[pool]["count"])

    def verify(self, pool: str) -> None:
        """Check every entry file of ``pool`` against the SHA-256 the manifest recorded when it was
        written; :class:`CacheDamagedError` naming the first damaged one (and how many) otherwise."""
        damaged = damaged_entries(self.root, pool, self.count(pool), self.manifest["sha256"][pool])
        if damaged:
            index, problem = next(iter(damaged.items()))
            many = f"{len(damaged)} damaged entries" if len(damaged) > 1 else "1 damaged entry"
            raise CacheDamagedError(
                f"teacher cache {self.root}: {many} in '{pool}'; first: entry {index} "
                f"({entry_path(self.root, pool, index)}): {problem}; run `segkd cache-teacher CONFIG` to "
                "re-write them"
            )

    def read(self, pool: str, index: int) -> dict[str, Any]:
        """The raw entry ``index`` of ``pool`` (name, size, encoded maps)."""
        return read_checkpoint(entry_path(self.root, pool, index))

    def maps(self, pool: str, index: int) -> tuple[str, tuple[int, int], dict[str, Tensor]]:
        """(sample name, source image (H, W), {key: float32 (C, h, w) map})."""
        entry = self.read(pool, index)
        maps = {key: decode(value) for key, value in entry["maps"].items()}
        return entry["name"], (int(entry["size"][0]), int(entry["size"][1])), maps
