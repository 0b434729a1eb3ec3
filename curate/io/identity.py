"""Run identity: which data a run was made from, and which files a finished run vouches for.

Every stage records the **identity of its input** in its checkpoints and its manifest: the
resolved path, the size and modification time of the files, and a hash of a few fixed rows
(:data:`N_FIXED_ROWS` rows spread over the array: a few reads, never a data pass). A resumed or
re-run stage compares it with the input it is given now and refuses to mix two inputs.

That identity is a cheap pre-check: it can only prove a change. A stage that reads every row
anyway (the cluster stage) also records the **content hash** of the whole input
(:class:`HashedRows` hashes the rows as the fit streams them, :func:`content_digest` combines
the ranks), and reuses a finished run only when the input's content hash is the recorded one.

A finished run's manifest lists the files it vouches for (:func:`vouch`): size always, a SHA-256
for files up to :data:`SMALL_FILE` bytes. A re-run checks them (:func:`verify_files`) before
trusting the manifest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from curate.core.errors import IdentityError, resolve
from curate.io.store import MANIFEST, load_embeddings, shard_files

N_FIXED_ROWS = 8
SMALL_FILE = 1 << 20  # files up to this size are hashed in the manifest, larger ones only sized
IDENTITY_KEYS = ("path", "size", "mtime_ns", "rows")


def fixed_rows(n: int, count: int = N_FIXED_ROWS) -> np.ndarray:
    """``(<= count,) int64`` row positions spread evenly over ``n`` rows (first and last included)."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, n - 1, min(count, n))).astype(np.int64))


def _digest(n: int, d: int, rows: np.ndarray) -> str:
    block = np.ascontiguousarray(rows, dtype=np.float64) + 0.0  # + 0.0: -0.0 and 0.0 hash alike
    h = hashlib.sha256(f"{n}x{d}:".encode())
    h.update(block.tobytes())
    return h.hexdigest()[:16]


def rows_digest(array: Any) -> str:
    """Hash of the shape and of :func:`fixed_rows` rows of an ``(n, d)`` array (any row-indexable
    input: ``np.ndarray``, memmap, store view). Reads ``N_FIXED_ROWS`` rows."""
    n, d = int(array.shape[0]), int(array.shape[1])
    pos = fixed_rows(n)
    rows = np.asarray(array[pos]).reshape(len(pos), d) if len(pos) else np.zeros((0, d))
    return _digest(n, d, rows)


def sharded_rows_digest(read_row: Callable[[int], np.ndarray], n_local: int, d: int) -> str:
    """:func:`rows_digest` of the rows all ranks hold together (rank ``r`` holds the ``r``-th
    contiguous block), the same for any number of ranks; every rank must call it.

    Args:
        read_row: this rank's local row ``i`` as a ``(d,)`` array.
        n_local: rows on this rank.
        d: columns.
    """
    import torch

    from curate.core import dist

    counts = dist.all_gather_stack(torch.tensor([n_local], dtype=torch.int64)).flatten()
    offset, n = int(counts[: dist.get_rank()].sum()), int(counts.sum())
    pos = fixed_rows(n)
    block = np.zeros((len(pos), d), dtype=np.float64)
    for j in np.flatnonzero((pos >= offset) & (pos < offset + n_local)):
        block[j] = np.asarray(read_row(int(pos[j]) - offset), dtype=np.float64).reshape(d) + 0.0
    block = dist.all_reduce_sum_(torch.from_numpy(block)).numpy()  # exact: every entry has one owner
    return _digest(n, d, block)


_MASK = (1 << 64) - 1
_LANE_KEYS = (0x243F6A8885A308D3, 0x13198A2E03707344)  # two independent 64-bit lanes: a 128-bit hash
_HASH_ROWS = 4096  # rows mixed at a time (bounds the temporaries)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on ``uint64`` arrays (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _row_lanes(block: np.ndarray, start: int) -> list[int]:
    """The two lane sums of the rows ``block: (m, d)`` at global positions ``start..start + m``:
    each row's bytes mixed word by word with the word's column and the row's position, summed
    over rows modulo 2**64 (so blocks, ranks and passes combine in any order)."""
    lanes = [0, 0]
    with np.errstate(over="ignore"):
        for lo in range(0, len(block), _HASH_ROWS):
            part = np.ascontiguousarray(block[lo : lo + _HASH_ROWS])
            raw = part.view(np.uint8).reshape(len(part), -1)
            if raw.shape[1] % 8:
                raw = np.pad(raw, ((0, 0), (0, 8 - raw.shape[1] % 8)))
            words = raw.view("<u8")
            pos = np.arange(start + lo, start + lo + len(part), dtype=np.uint64)
            cols = np.arange(words.shape[1], dtype=np.uint64)
            for i, key in enumerate(_LANE_KEYS):
                mixed = _splitmix(words ^ _splitmix(cols ^ np.uint64(key))).sum(axis=1, dtype=np.uint64)
                rows = _splitmix(mixed ^ _splitmix(pos ^ np.uint64(key)))
                lanes[i] = (lanes[i] + int(rows.sum(dtype=np.uint64))) & _MASK
    return lanes


class HashedRows:
    """A view of ``(n, d)`` rows (this rank's block, at global row ``offset``) that hashes their
    content while they are read: every row slice that continues the rows hashed so far (a pass
    over the data, in any block size) extends the hash, so a stage that streams its input anyway
    pays no extra read. :meth:`lanes` hashes what no pass read; :func:`content_digest` combines
    the ranks.

    The hash is position-keyed per 64-bit word and per row and summed over rows modulo 2**64 in
    two lanes (128 bits): any changed, swapped or moved row changes it, whatever the block sizes
    and the number of ranks; it guards against accidents, not against a forger.
    """

    def __init__(self, array: Any, offset: int = 0) -> None:
        self.array, self.offset = array, int(offset)
        self.shape, self.dtype = tuple(array.shape), array.dtype
        self.ndim = 2
        self.hashed = 0  # rows [0, hashed) are in the lanes
        self._lanes = [0, 0]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> Any:
        block = self.array[index]
        if isinstance(index, slice):
            lo, hi, step = index.indices(self.shape[0])
            if step == 1 and lo <= self.hashed < hi:
                self._feed(np.asarray(block[self.hashed - lo :]), self.hashed)
        return block

    def _feed(self, rows: np.ndarray, start: int) -> None:
        for i, lane in enumerate(_row_lanes(rows, self.offset + start)):
            self._lanes[i] = (self._lanes[i] + lane) & _MASK
        self.hashed = start + len(rows)

    def lanes(self, block_rows: int = 1 << 16) -> list[int]:
        """The two lane sums of all rows, reading the rows no pass has read yet."""
        while self.hashed < self.shape[0]:
            start = self.hashed
            self._feed(np.asarray(self.array[start : min(start + block_rows, self.shape[0])]), start)
        return list(self._lanes)


def content_digest(local: HashedRows, n: int) -> str:
    """The content hash (32 hex digits) of the ``(n, d)`` rows all ranks hold together (rank ``r``
    the ``r``-th contiguous block, each in a :class:`HashedRows` at its offset): the same for any
    number of ranks and block sizes. Every rank must call it."""
    import torch

    from curate.core import dist

    mine = torch.tensor([[lane >> 32, lane & 0xFFFFFFFF] for lane in local.lanes()], dtype=torch.int64)
    total = [0, 0]
    for part in dist.all_gather_stack(mine).reshape(-1, 2, 2).tolist():
        for i, (high, low) in enumerate(part):
            total[i] = (total[i] + (high << 32) + low) & _MASK
    h = hashlib.sha256(f"{n}x{local.shape[1]}:{np.dtype(local.dtype).str}:".encode())
    h.update(b"".join(lane.to_bytes(8, "little") for lane in total))
    return h.hexdigest()[:32]


def content_hash(array: Any) -> str:
    """:func:`content_digest` of ``array: (n, d)`` read by one process (one pass over it)."""
    return content_digest(HashedRows(array), int(array.shape[0]))


def _store_files(path: Path) -> list[Path]:

    return [path / MANIFEST] + [file for _, emb, ids in shard_files(path) for file in (emb, ids)]


def input_identity(path: str | os.PathLike, array: Any = None, rows: bool = True) -> dict[str, Any]:
    """Identity of an input: ``{"path", "size", "mtime_ns", "rows"}``.

    Args:
        path: a ``(n, d)`` ``.npy`` file or an embedding store folder (its manifest and shard
            files count); with ``rows=False`` any file (``rows`` is then the SHA-256 of its
            content when it is small, absent otherwise).
        array: the ``(n, d)`` rows already opened from ``path`` (avoids opening them again).
        rows: hash a few rows of ``path`` as an ``(n, d)`` array.
    """
    resolved = resolve(path, "input")
    files = _store_files(resolved) if resolved.is_dir() else [resolved]
    stats = [f.stat() for f in files]
    identity: dict[str, Any] = {
        "path": str(resolved),
        "size": int(sum(st.st_size for st in stats)),
        "mtime_ns": int(max(st.st_mtime_ns for st in stats)),
    }
    if array is None and rows:
        array, _ = load_embeddings(resolved)
    if array is not None:
        identity["rows"] = rows_digest(array)
    elif identity["size"] <= SMALL_FILE:
        identity["rows"] = file_sha256(resolved)
    return identity


def identity_changes(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """The identity keys on which ``recorded`` and ``current`` differ (all of them when nothing
    was recorded)."""
    if not isinstance(recorded, dict):
        return list(IDENTITY_KEYS)
    return [key for key in IDENTITY_KEYS if recorded.get(key) != current.get(key)]


def check_identity(recorded: Any, current: dict[str, Any], what: str, fresh: str) -> None:
    """Refuse to continue ``what`` (a checkpoint, an output folder) on another input.

    Args:
        recorded: the identity stored with ``what``.
        current: the identity of the input given now (:func:`input_identity`).
        what: names the run or file in the message.
        fresh: how to start afresh (``"set overwrite=true or pick another name="``).

    Raises:
        IdentityError: naming the fields that differ and both paths.
    """
    changed = identity_changes(recorded, current)
    if not changed:
        return
    was = recorded.get("path") if isinstance(recorded, dict) else None
    explain = {"path": "another file", "size": "its size changed", "mtime_ns": "it was modified"}
    reasons = ", ".join(explain.get(key, "its rows differ") for key in changed)
    if "path" in changed:
        told = f"was made from {was or 'an unrecorded input'} but the input is now {current['path']}"
    else:
        told = f"was made from {was}, which changed since"
    raise IdentityError(f"{what} {told} ({reasons}); {fresh}")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def vouch(folder: str | os.PathLike, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{name: {"size", "sha256" (small files only)}}`` for files of ``folder`` (relative names)."""
    folder = Path(folder)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(names):
        size = (folder / name).stat().st_size
        record: dict[str, Any] = {"size": int(size)}
        if size <= SMALL_FILE:
            record["sha256"] = file_sha256(folder / name)
        out[name] = record
    return out


def verify_files(folder: str | os.PathLike, records: Any) -> list[str]:
    """Problems with the files a manifest vouches for (empty: all present and unchanged).

    Args:
        folder: the run folder.
        records: the manifest's ``files`` (:func:`vouch`); a manifest without it vouches for nothing.
    """
    folder = Path(folder)
    if not isinstance(records, dict):
        return ["the manifest lists no files"]
    problems = []
    for name, record in records.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != record.get("size"):
            problems.append(f"{name} has {path.stat().st_size} bytes, the manifest says {record.get('size')}")
        elif "sha256" in record and file_sha256(path) != record["sha256"]:
            problems.append(f"{name} was modified")
    return problems
