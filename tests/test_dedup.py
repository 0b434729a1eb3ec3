"""Near-duplicate removal: planted copies, the greedy rule, brute-force reference, the Hydra app."""

import functools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import compose_config

from curate import dedup as dedup_module
from curate.dedup import deduplicate, resolve_edges, run_dedup
from curate.io.store import load_embeddings, load_labels, write_store


def brute_force(x: np.ndarray, threshold: float) -> np.ndarray:
    """The rule, one row at a time: keep i unless a kept j < i has cosine > threshold."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    kept: list[int] = []
    for i in range(len(x)):
        if not kept or (x[kept] @ x[i]).max() <= threshold:
            kept.append(i)
    return np.asarray(kept)


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """150 distinct rows, then 60 exact and 60 noisy copies of some of them, shuffled so copies
    come after their original (in the same chunk and in later chunks)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(150, 48)).astype(np.float32)  # distinct: cosines around 0 +- 0.15
    src = rng.integers(0, 150, size=120)
    copies = base[src].copy()
    copies[60:] += 0.02 * rng.normal(size=(60, 48)).astype(np.float32)  # cosine > 0.99
    copies *= rng.uniform(0.5, 3.0, size=(120, 1)).astype(np.float32)  # scale does not matter
    x = np.concatenate([base, copies])
    origin = np.concatenate([np.arange(150), src])
    # shuffle, then give each group's first position to its original
    order = rng.permutation(len(x))
    for group in range(150):
        slots = np.flatnonzero(origin[order] == group)
        members = order[slots]
        order[slots] = np.concatenate([[group], members[members != group]])
    return x[order], origin[order], np.isin(order, np.arange(150))


@pytest.mark.parametrize("chunk_size", [1, 16, 64, 1000])
def test_planted_duplicates_removed(chunk_size):
    x, origin, is_original = planted()
    result = deduplicate(x, threshold=0.95, chunk_size=chunk_size)
    np.testing.assert_array_equal(result.keep, is_original)
    removed = np.flatnonzero(~result.keep)
    # every removed row points at the kept original it copies
    np.testing.assert_array_equal(origin[result.duplicate_of[removed]], origin[removed])
    assert (result.duplicate_of[result.keep] == -1).all()
    assert (result.similarity[removed] > 0.95).all() and np.isnan(result.similarity[result.keep]).all()
    np.testing.assert_array_equal(result.kept_indices, brute_force(x, 0.95))


def test_chain_rule():
    # a ~ b (15 degrees), b ~ c (15 degrees), a !~ c (30 degrees); cos(20 deg) = 0.9397
    angles = np.deg2rad([0.0, 15.0, 30.0, 90.0, 105.0])
    x = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    for chunk_size in (1, 2, 5):
        result = deduplicate(x, threshold=0.9397, chunk_size=chunk_size)
        assert result.keep.tolist() == [True, False, True, True, False]
        assert result.duplicate_of.tolist() == [-1, 0, -1, -1, 3]


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_ties_point_at_the_smallest_index(backend):
    # c is exactly as similar to a and to b (cosine 0.7071): its duplicate_of is a, the smaller
    x = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]], np.float32)
    for chunk_size in (1, 2, 5):
        result = deduplicate(x, threshold=0.7, chunk_size=chunk_size, backend=backend)
        assert result.keep.tolist() == [True, True, True, False, False]
        assert result.duplicate_of.tolist() == [-1, -1, -1, 1, 0]


def test_duplicate_of_does_not_depend_on_the_chunk_size():
    # row 3 is a near-duplicate of rows 0 (cosine 0.978) and 2 (0.990), both kept (cosine(0, 2) =
    # 0.940): whether row 2 sits in an earlier chunk or in row 3's own, duplicate_of is row 2
    angles = np.deg2rad([0.0, 90.0, 20.0, 12.0])
    x = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    for chunk_size in (1, 2, 3, 4):
        result = deduplicate(x, threshold=0.95, chunk_size=chunk_size)
        assert result.keep.tolist() == [True, True, True, False]
        assert result.duplicate_of.tolist() == [-1, -1, -1, 2], chunk_size


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_dense_low_dim_data(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t = 0.97
    # drop rows of pairs within 1e-5 of the threshold: float32 rounding must not decide the test
    sim = np.triu(x @ x.T, 1)
    near = np.abs(sim - t) < 1e-5
    x = x[~np.isin(np.arange(len(x)), np.nonzero(near)[1])].astype(np.float32)
    expected = brute_force(x.astype(np.float64), t)
    assert 50 < len(expected) < len(x) - 50  # long chains of near-duplicates
    for chunk_size in (7, 64, 4096):
        got = deduplicate(x, threshold=t, chunk_size=chunk_size, sim_budget=max(chunk_size, 256))
        np.testing.assert_array_equal(got.kept_indices, expected)


def test_faiss_backend_matches_torch():
    x, _, is_original = planted(1)
    got = deduplicate(x, threshold=0.95, chunk_size=32, backend="faiss")
    ref = deduplicate(x, threshold=0.95, chunk_size=32)
    np.testing.assert_array_equal(got.keep, is_original)
    np.testing.assert_array_equal(got.duplicate_of, ref.duplicate_of)


@pytest.mark.parametrize("density", [0.02, 0.05, 0.3])
def test_resolve_edges_vectorised_rule(density):
    rng = np.random.default_rng(3)
    adj = np.triu(rng.uniform(size=(60, 60)) < density, 1)
    fixed = rng.uniform(size=60) < 0.1
    src, dst = (torch.from_numpy(a) for a in np.nonzero(adj))
    keep = resolve_edges(60, src, dst, torch.from_numpy(fixed)).numpy()
    expected = np.zeros(60, bool)
    for i in range(60):  # reference: sequential
        expected[i] = not fixed[i] and not any(expected[j] and adj[j, i] for j in range(i))
    np.testing.assert_array_equal(keep, expected)


compose_dedup = functools.partial(compose_config, "dedup")


def test_run_dedup_on_store_writes_outputs(tmp_path):
    x, origin, is_original = planted()
    ids = [f"doc{i}" for i in range(len(x))]
    write_store(tmp_path / "emb", x, ids, labels=origin % 4, label_names=list("abcd"), shard_size=100, model="m")
    cfg = compose_dedup(
        [
            f"input={tmp_path / 'emb'}",
            f"out={tmp_path / 'dd'}",
            "chunk_size=50",
            "write_store=true",
            "shard_size=64",
            "device=cpu",
        ]
    )
    summary = run_dedup(cfg)
    kept = np.flatnonzero(is_original)
    assert summary["count"] == 270 and summary["kept"] == 150 and summary["removed"] == 120
    assert summary["threshold"] == 0.95 and "greedy" in summary["rule"]
    assert json.loads((tmp_path / "dd" / "dedup.json").read_text()) == summary
    np.testing.assert_array_equal(np.load(tmp_path / "dd" / "kept_indices.npy"), kept)
    assert (tmp_path / "dd" / "kept_ids.txt").read_text().splitlines() == [ids[i] for i in kept]
    assert np.load(tmp_path / "dd" / "duplicate_of.npy").shape == (270,)
    array, got_ids = load_embeddings(tmp_path / "dd" / "store")
    np.testing.assert_array_equal(array[0 : len(kept)], x[kept])
    assert list(got_ids) == [ids[i] for i in kept]
    labels, names = load_labels(tmp_path / "dd" / "store")
    np.testing.assert_array_equal(labels, origin[kept] % 4)
    assert names == list("abcd")


def test_dedup_hydra_main_on_npy(tmp_path, monkeypatch):
    x, _, is_original = planted(2)
    np.save(tmp_path / "x.npy", x)
    argv = [
        "curate.dedup",
        f"input={tmp_path / 'x.npy'}",
        f"out={tmp_path / 'dd'}",
        "threshold=0.9",
        "device=cpu",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    dedup_module.main()
    np.testing.assert_array_equal(np.load(tmp_path / "dd" / "kept_indices.npy"), np.flatnonzero(is_original))
    assert (tmp_path / "dd" / "kept_ids.txt").read_text().split() == [str(i) for i in np.flatnonzero(is_original)]


def test_dedup_config_errors(tmp_path):
    cfg = compose_dedup(["input=x", "out=y"])
    assert cfg.threshold == 0.95 and cfg.backend == "torch"
    with pytest.raises(Exception, match="threshhold"):
        compose_dedup(["input=x", "out=y", "threshhold=0.9"])
    with pytest.raises(Exception, match="chunk_size"):
        compose_dedup(["chunk_size=big"])
    with pytest.raises(Exception, match="backend=annoy") as refused:
        compose_dedup(["input=x", "out=y", "backend=annoy"])  # a choice: refused when composing
    assert "expected one of [torch, faiss]" in str(refused.value.__cause__)
    for override, field in [
        ("threshold=1.5", "threshold"),
        ("chunk_size=0", "chunk_size"),
    ]:
        with pytest.raises(ValueError, match=field):
            run_dedup(compose_dedup([f"input={tmp_path}", f"out={tmp_path / 'o'}", override]))
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match=r"empty.npy is empty \(0 rows\)"):
        run_dedup(compose_dedup([f"input={tmp_path / 'empty.npy'}", f"out={tmp_path / 'o'}"]))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            deduplicate(np.eye(3, dtype=np.float32), device="cuda")
    with pytest.raises(ValueError, match="row 2 holds NaN"):
        deduplicate(np.array([[1.0, 0], [0, 1], [np.nan, 0]], np.float32))


# ---- distributed: the ranks share the work and agree with one process -----------------------
def _dedup_rank(rank: int, world: int, port: int, overrides: list[str], out_dir: str) -> None:
    import os

    import torch.distributed as torch_dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    try:
        summary = run_dedup(compose_dedup(overrides))
        Path(out_dir, f"summary_{rank}.json").write_text(json.dumps(summary))
    except ValueError as err:  # bad input: every rank must fail the same way, none may hang
        Path(out_dir, f"error_{rank}.txt").write_text(str(err))
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()


@pytest.mark.parametrize(
    "world, chunk_size, backend",
    # 270 rows; windows of 32 / 120 rows: the last one leaves ranks without rows
    [(2, 16, "torch"), pytest.param(3, 40, "torch", marks=pytest.mark.long), (3, 40, "faiss")],
)
def test_ranks_share_the_work_and_match_one_process(tmp_path, free_port, world, chunk_size, backend):
    x, origin, is_original = planted(4)
    np.save(tmp_path / "x.npy", x)
    single = deduplicate(x, threshold=0.95, chunk_size=chunk_size)
    overrides = [
        f"input={tmp_path / 'x.npy'}",
        f"out={tmp_path / 'dd'}",
        f"chunk_size={chunk_size}",
        f"backend={backend}",
        "device=cpu",
    ]
    mp.spawn(_dedup_rank, args=(world, free_port, overrides, str(tmp_path)), nprocs=world)
    summaries = [json.loads((tmp_path / f"summary_{r}.json").read_text()) for r in range(world)]
    assert all(s == summaries[0] for s in summaries) and summaries[0]["world_size"] == world
    np.testing.assert_array_equal(np.load(tmp_path / "dd" / "kept_indices.npy"), np.flatnonzero(is_original))
    np.testing.assert_array_equal(np.load(tmp_path / "dd" / "duplicate_of.npy"), single.duplicate_of)
    assert not (tmp_path / "dd" / "checkpoint.npz").exists()


def _result_rank(rank: int, world: int, port: int, x: np.ndarray, out_dir: str) -> None:
    import os

    import torch.distributed as torch_dist

    from curate.core import dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_distributed(backend="gloo")
    try:
        result = deduplicate(x, threshold=0.95, chunk_size=32)
        np.save(f"{out_dir}/keep_{rank}.npy", result.keep)
        if result.duplicate_of is not None:
            np.save(f"{out_dir}/dup_{rank}.npy", result.duplicate_of)
    finally:
        torch_dist.destroy_process_group()


def test_only_rank_zero_holds_the_per_row_details(tmp_path, free_port):
    x, _, is_original = planted(7)
    mp.spawn(_result_rank, args=(2, free_port, x, str(tmp_path)), nprocs=2)
    single = deduplicate(x, threshold=0.95, chunk_size=32)
    for rank in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"keep_{rank}.npy"), is_original)
    np.testing.assert_array_equal(np.load(tmp_path / "dup_0.npy"), single.duplicate_of)
    assert not (tmp_path / "dup_1.npy").exists()  # 12 bytes a row that rank 1 does not need


def test_bad_row_fails_on_every_rank(tmp_path, free_port):
    x, _, _ = planted()
    x[200, 5] = np.nan  # in rank 1's chunk of the second window
    np.save(tmp_path / "x.npy", x)
    overrides = [f"input={tmp_path / 'x.npy'}", f"out={tmp_path / 'dd'}", "chunk_size=64", "device=cpu"]
    mp.spawn(_dedup_rank, args=(2, free_port, overrides, str(tmp_path)), nprocs=2)
    for rank in range(2):
        assert "row 200 holds NaN" in (tmp_path / f"error_{rank}.txt").read_text()
    assert not (tmp_path / "dd" / "dedup.json").exists()


def test_killed_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    x, _, _ = planted(5)
    np.save(tmp_path / "x.npy", x)
    overrides = [f"input={tmp_path / 'x.npy'}", "chunk_size=20", "checkpoint_every_s=0", "device=cpu"]
    ref = run_dedup(compose_dedup([*overrides, f"out={tmp_path / 'ref'}"]))
    save = dedup_module._save_checkpoint
    calls: list[int] = []
    kill = [True]

    def killed_after_three(path, progress, fingerprint):
        save(path, progress, fingerprint)
        calls.append(progress.next_row)
        if kill[0] and len(calls) == 3:
            kill[0] = False
            raise KeyboardInterrupt

    monkeypatch.setattr(dedup_module, "_save_checkpoint", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_dedup(compose_dedup([*overrides, f"out={tmp_path / 'dd'}"]))
    assert calls == [20, 40, 60] and (tmp_path / "dd" / "checkpoint.npz").exists()
    assert not (tmp_path / "dd" / "dedup.json").exists()
    # another threshold must not pick up these decisions
    with pytest.raises(ValueError, match="checkpoint of another input or threshold"):
        run_dedup(compose_dedup([*overrides, f"out={tmp_path / 'dd'}", "threshold=0.9"]))
    calls.clear()
    assert run_dedup(compose_dedup([*overrides, f"out={tmp_path / 'dd'}"])) == ref
    assert calls[0] == 80  # resumed after row 60, not from the start
    for name in ("kept_indices.npy", "duplicate_of.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "dd" / name), np.load(tmp_path / "ref" / name))
    assert not (tmp_path / "dd" / "checkpoint.npz").exists()
    # a finished run is skipped; another threshold on the same out is refused
    calls.clear()
    assert run_dedup(compose_dedup([*overrides, f"out={tmp_path / 'dd'}"])) == ref and calls == []
    with pytest.raises(ValueError, match=r"threshold changed.*overwrite=true"):
        run_dedup(compose_dedup([*overrides, f"out={tmp_path / 'dd'}", "threshold=0.9"]))


@pytest.mark.gpu
def test_cuda_matches_cpu():
    x, _, is_original = planted(6)
    cpu = deduplicate(x, threshold=0.95, chunk_size=64)
    gpu = deduplicate(x, threshold=0.95, chunk_size=64, device="cuda")
    default = deduplicate(x, threshold=0.95, device="cuda")  # the GPU's default tiles
    for got in (gpu, default):
        np.testing.assert_array_equal(got.keep, is_original)
        np.testing.assert_array_equal(got.duplicate_of, cpu.duplicate_of)
