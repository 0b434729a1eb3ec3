"""Decontamination (``curate.dedup reference=...``) against a brute-force numpy loop, 2 gloo ranks
against 1, bad references as one error line, and the threshold's edges 0.0 and 1.0 (issue 23
item 4: float32 rounding of normalised dot products must not remove a pair at the threshold)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import compose_config
from test_errors import _one_error_line

from curate.core.errors import InputError
from curate.dedup import SIM_TOLERANCE, deduplicate, run_dedup
from curate.io.idlist import read_ids
from curate.io.store import write_store


def brute_force(x: np.ndarray, references: list[np.ndarray], threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The rule one row at a time in float64: a row more similar than the threshold to a reference
    row is removed (and removes nobody); then keep i unless a kept j < i is more similar.

    Returns:
        ``(kept rows, contaminated_by (N,))`` (reference rows concatenated; -1 for the others).
    """
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    ref = np.concatenate(references).astype(np.float64)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    kept: list[int] = []
    by = np.full(len(x), -1, np.int64)
    for i in range(len(x)):
        sims = ref @ unit[i]
        if sims.max() > threshold:
            by[i] = int(np.argmax(sims))
            continue
        if not kept or (unit[kept] @ unit[i]).max() <= threshold:
            kept.append(i)
    return np.asarray(kept), by


def pool_and_references(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """About 240 pool rows (d=24): 150 distinct, 40 scaled copies of some of them, 20 rows at 17
    degrees from rows of two reference sets (30 and 20 rows; removed) and, for 10 of those, a row
    17 degrees further (34 from the reference: kept, since a removed row removes nobody). No
    cosine lies within 1e-3 of the threshold 0.9."""
    rng = np.random.default_rng(seed)
    ref_a = rng.normal(size=(30, 24)).astype(np.float32)
    ref_b = rng.normal(size=(20, 24)).astype(np.float32)
    base = rng.normal(size=(150, 24)).astype(np.float32)
    r = np.concatenate([ref_a[:12], ref_b[:8]]).astype(np.float64)
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    u = rng.normal(size=r.shape)
    u -= (u * r).sum(1, keepdims=True) * r
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    angle = np.deg2rad(17.0)
    near_ref = np.cos(angle) * r + np.sin(angle) * u
    beside = np.cos(2 * angle) * r[:10] + np.sin(2 * angle) * u[:10]
    pool = np.concatenate([base, base[:40] * 2.0, near_ref, beside])
    pool = pool[rng.permutation(len(pool))].astype(np.float32)
    return pool, ref_a, ref_b


def _margins_clear(x: np.ndarray, refs: list[np.ndarray], threshold: float) -> bool:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    ref = np.concatenate(refs)
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    sims = np.concatenate([(unit @ unit.T)[np.triu_indices(len(x), 1)], (unit @ ref.T).ravel()])
    return bool(np.abs(sims - threshold).min() > 1e-3)


def test_matches_brute_force_with_two_references():
    pool, ref_a, ref_b = pool_and_references()
    assert _margins_clear(pool, [ref_a, ref_b], 0.9)
    kept, by = brute_force(pool, [ref_a, ref_b], 0.9)
    assert (by >= 0).sum() >= 20 and len(kept) < len(pool) - (by >= 0).sum()  # both kinds of removal happen
    for chunk_size in (16, 64, 1000):
        result = deduplicate(pool, 0.9, chunk_size=chunk_size, reference=[ref_a, ref_b], memory_budget_mb=0.01)
        np.testing.assert_array_equal(result.kept_indices, kept)
        np.testing.assert_array_equal(result.contaminated_by, by)
        assert (result.duplicate_of[by >= 0] == -1).all()


def _store(folder: Path, x: np.ndarray, prefix: str) -> Path:
    write_store(folder, x, [f"{prefix}{i}" for i in range(len(x))])
    return folder


def test_cli_reports_both_counts_and_lists_the_kept_ids(tmp_path, cli):
    pool, ref_a, ref_b = pool_and_references(1)
    assert _margins_clear(pool, [ref_a, ref_b], 0.9)
    kept, by = brute_force(pool, [ref_a, ref_b], 0.9)
    _store(tmp_path / "pool", pool, "p")
    np.save(tmp_path / "ref_a.npy", ref_a)
    _store(tmp_path / "ref_b", ref_b, "b")
    refs = f"reference=[{tmp_path / 'ref_a.npy'},{tmp_path / 'ref_b'}]"
    out = tmp_path / "dd"
    cli("-m", "curate.dedup", f"input={tmp_path / 'pool'}", f"out={out}", refs, "threshold=0.9", "device=cpu")
    summary = json.loads((out / "dedup.json").read_text())
    assert summary["contaminated"] == int((by >= 0).sum())
    assert summary["duplicates"] == len(pool) - len(kept) - int((by >= 0).sum())
    assert summary["removed"] == summary["contaminated"] + summary["duplicates"]
    assert [r["removed"] for r in summary["reference"]] == [int((by[by >= 0] < 30).sum()), int((by >= 30).sum())]
    assert read_ids(out / "kept_ids.txt") == [f"p{i}" for i in kept]
    np.testing.assert_array_equal(np.load(out / "contaminated_by.npy"), by)
    # the reference's identity is a content setting: another evaluation set is refused, naming it
    cfg = compose_config("dedup", [f"input={tmp_path / 'pool'}", f"out={out}", "threshold=0.9", "device=cpu"])
    cfg.reference = str(tmp_path / "ref_b")
    with pytest.raises(ValueError, match=r"other settings \(reference changed\); set overwrite=true"):
        run_dedup(cfg)
    # bad references: one error line naming the key (the dimension's case in-process)
    proc = cli("-m", "curate.dedup", f"input={tmp_path / 'pool'}", f"out={tmp_path / 'bad'}",
               f"reference={tmp_path / 'missing'}", check=False)  # fmt: skip
    _one_error_line(proc, "reference=", "missing")
    np.save(tmp_path / "wide.npy", np.ones((3, 7), np.float32))
    for bad, text in ((tmp_path / "wide.npy", "has dimension 7, the pool"), ([], None)):
        cfg = compose_config("dedup", [f"input={tmp_path / 'pool'}", f"out={tmp_path / 'bad'}", "device=cpu"])
        cfg.reference = bad if isinstance(bad, list) else str(bad)
        if text is None:  # an empty list: no reference, a plain dedup
            assert run_dedup(cfg)["contaminated"] is None
            continue
        with pytest.raises(InputError, match=f"reference={bad} {text}"):
            run_dedup(cfg)


def test_threshold_edges_on_the_command_line(tmp_path, cli):
    """64 orthonormal rows, scaled copies of them, 5 rows at cosine 0.71 to two of them. At 1.0 all
    stay (no cosine is above 1, though some copies compute to 1.0000001); at 0.0 the orthonormal
    rows stay (their cosines compute to +-1e-7) and the others go."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(64, 64)))
    x = np.concatenate([q, q * rng.uniform(0.5, 3.0, size=(64, 1)), q[:5] + q[5:10]]).astype(np.float32)
    unit = torch.nn.functional.normalize(torch.from_numpy(x), dim=1)
    assert ((unit[:64] * unit[64:128]).sum(1) > 1.0).any() and (unit[:64] @ unit[:64].T - torch.eye(64)).max() > 0
    np.save(tmp_path / "x.npy", x)
    cli("-m", "curate.dedup", f"input={tmp_path / 'x.npy'}", f"out={tmp_path / 'one'}", "threshold=1.0")
    np.testing.assert_array_equal(np.load(tmp_path / "one" / "kept_indices.npy"), np.arange(133))
    cfg = compose_config("dedup", [f"input={tmp_path / 'x.npy'}", f"out={tmp_path / 'zero'}", "threshold=0.0"])
    assert run_dedup(cfg)["kept"] == 64
    np.testing.assert_array_equal(np.load(tmp_path / "zero" / "kept_indices.npy"), np.arange(64))
    # the same margin against a reference: a copy of a reference row is not above 1.0
    assert deduplicate(x[64:128], 1.0, reference=[x[:64]]).keep.all() and SIM_TOLERANCE <= 1e-4


def _rank(rank: int, world: int, port: int, overrides: list[str], out_dir: str) -> None:
    import os

    import torch.distributed as torch_dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    try:
        summary = run_dedup(compose_config("dedup", overrides))
        Path(out_dir, f"summary_{rank}.json").write_text(json.dumps(summary))
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def test_two_ranks_equal_one(tmp_path, free_port):
    pool, ref_a, ref_b = pool_and_references(2)
    assert _margins_clear(pool, [ref_a, ref_b], 0.9)
    np.save(tmp_path / "pool.npy", pool)
    np.save(tmp_path / "a.npy", ref_a)
    np.save(tmp_path / "b.npy", ref_b)
    common = [
        f"input={tmp_path / 'pool.npy'}",
        f"reference=[{tmp_path / 'a.npy'},{tmp_path / 'b.npy'}]",
        "threshold=0.9",
        "chunk_size=24",
        "device=cpu",
    ]
    one = run_dedup(compose_config("dedup", [*common, f"out={tmp_path / 'one'}"]))
    mp.spawn(_rank, args=(2, free_port, [*common, f"out={tmp_path / 'two'}"], str(tmp_path)), nprocs=2)
    two = json.loads((tmp_path / "summary_0.json").read_text())
    assert two["world_size"] == 2 and json.loads((tmp_path / "summary_1.json").read_text())["kept"] == two["kept"]
    assert (one["kept"], one["contaminated"], one["duplicates"]) == (
        two["kept"],
        two["contaminated"],
        two["duplicates"],
    )
    for name in ("kept_indices.npy", "duplicate_of.npy", "contaminated_by.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "one" / name), np.load(tmp_path / "two" / name))
    kept, by = brute_force(pool, [ref_a, ref_b], 0.9)
    np.testing.assert_array_equal(np.load(tmp_path / "two" / "kept_indices.npy"), kept)
