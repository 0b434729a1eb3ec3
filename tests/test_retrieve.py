"""The retrieval arm: exact search against a brute-force numpy top-N, 2 gloo ranks against 1,
IVF recall against exact, and the stage through the real CLI with bad inputs."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from curate.core import dist
from curate.io.store import write_store
from curate.retrieval import merge_topk, search, tile_topk


def _pool(n: int = 900, d: int = 12, seed: int = 0) -> np.ndarray:
    """Clustered rows with exact duplicates (ties) and a zero row."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(10, d))
    x = centers[rng.integers(0, 10, n)] + 0.4 * rng.normal(size=(n, d))
    x[50:60] = x[10]  # ten copies of row 10: equal similarities, the smaller row first
    x[700:705] = x[3] * 8.0  # same direction, a power-of-two norm: the same float32 cosine
    x[5] = 0.0
    return x.astype(np.float32)


def brute_force(pool: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) pool rows by decreasing cosine similarity (float64), ties to the smaller row."""
    norm = np.linalg.norm(pool.astype(np.float64), axis=1, keepdims=True)
    p = pool / np.where(norm > 0, norm, 1.0)
    q = queries / np.linalg.norm(queries.astype(np.float64), axis=1, keepdims=True)
    sim = q @ p.T
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def _queries(pool: np.ndarray, count: int = 40, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = pool[rng.choice(len(pool), count, replace=False)] + 0.3 * rng.normal(size=(count, pool.shape[1]))
    q[0] = pool[10]  # exactly a duplicated row: ties at the top
    return q.astype(np.float32)


@pytest.mark.parametrize("budget_mb", [256.0, 0.01])  # one chunk; chunks of a few rows
@pytest.mark.parametrize("k", [1, 7, 25])
def test_exact_equals_brute_force(k, budget_mb):
    pool = _pool()
    queries = _queries(pool)
    scores, index = search(pool, queries, k, memory_budget_mb=budget_mb)
    np.testing.assert_array_equal(index, brute_force(pool, queries, k))
    assert np.all(np.diff(scores, axis=1) <= 0)
    assert index[0, :11].tolist() == [10, *range(50, 60)][:k] or k < 11


def test_tile_topk_breaks_ties_at_the_boundary_to_the_smaller_column():
    sim = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2]])
    values, columns = tile_topk(sim, 2)
    assert sorted(columns[0].tolist()) == [0, 1] and sorted(columns[1].tolist()) == [0, 1]
    scores, index = merge_topk(torch.tensor([[0.3, 0.7, 0.7, -float("inf")]]), torch.tensor([[4, 9, 2, -1]]), 3)
    assert index.tolist() == [[2, 9, 4]]


def _rank(rank: int, world: int, port: int, pool, queries, k: int, options: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_distributed(backend="gloo")
    try:
        scores, index = search(pool, queries, k, **options)
        np.save(f"{out}/index_{rank}.npy", index)
        np.save(f"{out}/scores_{rank}.npy", scores)
    finally:
        torch_dist.destroy_process_group()


@pytest.mark.parametrize(
    "options",
    [{"memory_budget_mb": 0.01}, {"method": "ivf", "nlist": 16, "nprobe": 3, "train_size": 500}],
    ids=["exact", "ivf"],
)
def test_two_ranks_equal_one(tmp_path, free_port, options):
    pool = _pool(n=901)  # an odd pool: unequal shards
    queries = _queries(pool)
    scores, index = search(pool, queries, 9, **options)
    mp.spawn(_rank, args=(2, free_port, pool, queries, 9, options, str(tmp_path)), nprocs=2)
    for rank in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"index_{rank}.npy"), index)
        np.testing.assert_array_equal(np.load(tmp_path / f"scores_{rank}.npy"), scores)


def test_ivf_recall_against_exact():
    pool = _pool(n=3000, d=16, seed=2)
    queries = _queries(pool, count=100, seed=3)
    exact = search(pool, queries, 10)[1]
    full = search(pool, queries, 10, method="ivf", nlist=32, nprobe=32, train_size=3000)[1]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(full, exact)]) >= 0.99  # all cells: exact
    approx = search(pool, queries, 10, method="ivf", nlist=32, nprobe=2, train_size=3000)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx, exact)])
    print(f"IVF nlist=32 nprobe=2 recall@10 = {recall:.3f}")
    assert recall > 0.3  # a sane floor, not a quality claim


# ---- the stage, as a user runs it -----------------------------------------------------------
@pytest.fixture
def stores(tmp_path):
    pool = _pool()
    queries = _queries(pool)
    write_store(tmp_path / "pool", pool, [f"p{i:04d}" for i in range(len(pool))], shard_size=400)
    write_store(tmp_path / "queries", queries, shard_size=15)
    return tmp_path / "pool", tmp_path / "queries", pool, queries


def test_retrieve_cli_writes_the_union_of_each_querys_neighbours(tmp_path, stores, cli):
    pool_dir, query_dir, pool, queries = stores
    out = tmp_path / "out"
    cli("-m", "curate.retrieve", f"input={pool_dir}", f"queries={query_dir}", "per_query=6", f"out={out}")
    expected = brute_force(pool, queries, 6)
    np.testing.assert_array_equal(np.load(out / "neighbours.npy"), expected)
    union = np.unique(expected)
    table = pq.read_table(out / "selected.parquet")
    assert table.column_names == ["id", "index"]
    np.testing.assert_array_equal(table.column("index").to_numpy(), union)
    assert table.column("id").to_pylist() == [f"p{i:04d}" for i in union]
    np.testing.assert_array_equal(np.load(out / "indices.npy"), union)
    assert (out / "ids.txt").read_text().splitlines() == table.column("id").to_pylist()
    summary = json.loads((out / "retrieve.json").read_text())
    assert summary["selected"] == len(union) and summary["pool_count"] == len(pool)
    assert summary["query_count"] == len(queries) and summary["method"] == "exact"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and "selected.parquet" in manifest["files"]

    cli(
        "-m",
        "curate.retrieve",
        f"input={pool_dir}",
        f"queries={query_dir}",
        "per_query=6",
        f"out={tmp_path / 'ivf'}",
        "method=ivf",
        "nlist=8",
        "nprobe=8",
    )
    ivf = np.load(tmp_path / "ivf" / "neighbours.npy")
    assert np.mean([len(set(a) & set(b)) for a, b in zip(ivf, expected)]) >= 5.9  # every cell probed


@pytest.mark.parametrize(
    "args, message",
    [
        (["per_query=0"], "per_query: must be an integer >= 1"),
        (["per_query=100000"], "per_query=100000 exceeds the pool's 900 items"),
        (["per_query=3", "queries=WRONG_DIM"], "has dimension 5, the pool"),
        (["per_query=3", "input=MISSING"], "input="),
        (["per_query=3", "method=ivf", "nlist=5000"], "nlist=5000 exceeds"),
        (["per_query=3", "method=hnsw"], "method"),
        (["per_query=3", "out=INSIDE"], "out"),
    ],
)
def test_bad_inputs_end_with_one_error_line(tmp_path, stores, cli, args, message):
    pool_dir, query_dir, _, _ = stores
    np.save(tmp_path / "five.npy", np.ones((4, 5), dtype=np.float32))
    values = {"WRONG_DIM": str(tmp_path / "five.npy"), "MISSING": str(tmp_path / "nope"), "INSIDE": str(pool_dir / "x")}
    given = {"input": str(pool_dir), "queries": str(query_dir), "out": str(tmp_path / "out")}
    for arg in args:
        key, value = arg.split("=", 1)
        given[key] = values.get(value, value)
    proc = cli("-m", "curate.retrieve", *(f"{key}={value}" for key, value in given.items()), check=False)
    assert proc.returncode != 0
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_bench_retrieve_reports_recall_and_time_ratio(load_script, capsys):
    bench = load_script("bench_retrieve")
    argv = ["--n", "3000", "--d", "8", "--clusters", "20", "--queries", "50", "--nlist", "16"]
    rows = bench.main([*argv, "--nprobe", "1", "16", "--train-size", "3000"])
    assert [r["impl"] for r in rows] == ["exact", "ivf nprobe=1", "ivf nprobe=16"]
    assert rows[2]["recall"] >= 0.99 and 0 < rows[1]["recall"] <= 1  # every cell probed: exact
    assert all(r["time_vs_exact"] > 0 for r in rows[1:])
    assert "recall@N" in capsys.readouterr().out
