"""The content hash of an input (curate.io.identity.HashedRows / content_hash): the same for any
read pattern and any split into rank blocks, and changed by any changed, swapped or moved row."""

from __future__ import annotations

import numpy as np

from curate.io.identity import HashedRows, content_hash


def _x(n: int = 1000, d: int = 5) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)  # 20-byte rows: padded words


def test_streamed_reads_in_any_block_size_give_the_one_pass_hash():
    x = _x()
    whole = HashedRows(x).lanes()
    for block in (1, 7, 333, 4096):
        rows = HashedRows(x)
        for lo in range(0, len(x), block):
            rows[lo : lo + block]  # a pass over the data, as a fit reads it
        assert rows.hashed == len(x) and rows.lanes() == whole
    rows = HashedRows(x)
    rows[500:600], rows[0:100], rows[[3, 9]]  # reads that do not continue the hash feed nothing
    assert rows.hashed == 100 and rows.lanes() == whole  # the rest read by lanes()


def test_rank_blocks_sum_to_the_whole():
    x = _x()
    whole = HashedRows(x).lanes()
    for cut in (1, 400, 999):
        parts = [HashedRows(x[:cut], 0).lanes(), HashedRows(x[cut:], cut).lanes()]
        assert [(a + b) % 2**64 for a, b in zip(*parts)] == whole


def test_any_changed_swapped_or_moved_row_changes_the_hash():
    x = _x()
    reference = content_hash(x)
    assert content_hash(x.copy()) == reference
    changed = x.copy()
    changed[617, 2] = np.nextafter(changed[617, 2], np.float32(np.inf))  # one ulp of one value
    swapped = x.copy()
    swapped[[10, 11]] = swapped[[11, 10]]
    moved = np.roll(x, 1, axis=0)
    hashes = {content_hash(a) for a in (changed, swapped, moved, x[:-1], x.astype(np.float64))}
    assert reference not in hashes and len(hashes) == 5
