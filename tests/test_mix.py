"""Mixing in training (issue 21 item 7): ``data.mix`` parts drawn by weight, homogeneous batches,
reproducible and resumable like the single-selection sampler; the parts read by the one selection
reader; bad settings as one ``error:`` line; a tiny training run through the app."""

from __future__ import annotations

import json
import sys
from itertools import islice

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selfsup.config import to_train_config
from selfsup.data import MixedBatchSampler, open_image_set

SIZES = (50, 30, 20, 10)
WEIGHTS = np.array([5.0, 3.0, 2.0, 0.0])  # the last part is never drawn


def disjoint_parts(sizes=SIZES) -> list[np.ndarray]:
    offsets = np.cumsum([0, *sizes])
    return [np.arange(offsets[k], offsets[k + 1]) for k in range(len(sizes))]


def part_of(items: np.ndarray, sizes=SIZES) -> np.ndarray:
    return np.searchsorted(np.cumsum(sizes), items, side="right")


def batches(sampler: MixedBatchSampler, steps: int) -> np.ndarray:
    """``(steps, b)`` items of the sampler's first ``steps`` batches."""
    return np.array([[item for item, _ in keys] for keys in islice(iter(sampler), steps)])


def within(count: float, n: int, p: float, sigmas: float = 4.0) -> bool:
    """A binomial count of ``n`` draws with chance ``p`` is within ``sigmas`` std of its mean."""
    return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p)) + 1e-9


def test_batch_composition_matches_the_weights():
    steps, b = 300, 32
    items = batches(MixedBatchSampler(disjoint_parts(), WEIGHTS, 0.0, b, seed=3), steps)
    counts = np.bincount(part_of(items.ravel()), minlength=len(SIZES))
    p = WEIGHTS / WEIGHTS.sum()
    n = steps * b
    assert counts[3] == 0
    assert all(within(counts[k], n, p[k]) for k in range(3)), (counts, n * p)
    # batches are mixed, not whole: most hold items of all three drawn parts
    per_batch = [len(np.unique(part_of(row))) for row in items]
    assert np.mean(np.array(per_batch) == 3) > 0.9


def test_homogeneous_batches_are_homogeneous_and_their_fraction_and_parts_follow_the_settings():
    steps, b, h = 1500, 16, 0.3
    sampler = MixedBatchSampler(disjoint_parts(), WEIGHTS, h, b, seed=5)
    items = batches(sampler, steps)
    _, flags = sampler.plans(sampler._stream(), steps)  # the plan the batches were drawn from
    parts = part_of(items)
    single = (parts == parts[:, :1]).all(axis=1)
    assert single[flags].all()  # every homogeneous batch draws from one part
    # a mixed batch of one part only would take (1/2)^16: none of them is
    assert not single[~flags].any()
    assert within(flags.sum(), steps, h)
    p = WEIGHTS / WEIGHTS.sum()
    chosen = np.bincount(parts[flags, 0], minlength=len(SIZES))
    assert chosen[3] == 0 and all(within(chosen[k], int(flags.sum()), p[k]) for k in range(3)), chosen
    mixed = np.bincount(parts[~flags].ravel(), minlength=len(SIZES))
    assert all(within(mixed[k], int((~flags).sum()) * b, p[k]) for k in range(3)), mixed
    for all_or_none in (0.0, 1.0):
        s = MixedBatchSampler(disjoint_parts(), WEIGHTS, all_or_none, b, seed=5)
        whole = part_of(batches(s, 50))
        assert (whole == whole[:, :1]).all(axis=1).mean() == all_or_none


def test_each_part_walks_its_epochs_without_repeats():
    """A part's draws cover all its items before any repeats (epoch permutations per part)."""
    sizes = (7, 5)
    sampler = MixedBatchSampler(disjoint_parts(sizes), [1.0, 1.0], 0.0, 6, seed=0)
    items = batches(sampler, 40).ravel()
    for k, size in enumerate(sizes):
        drawn = items[part_of(items, sizes) == k]
        epochs = len(drawn) // size
        assert epochs >= 3
        for e in range(epochs):
            assert sorted(drawn[e * size : (e + 1) * size]) == list(range(sum(sizes[:k]), sum(sizes[: k + 1])))
    assert sampler.drawn(40).tolist() == [int(np.sum(part_of(items, sizes) == k)) for k in range(2)]


def test_mixed_sampler_is_seeded_resumable_and_world_size_free():
    parts, b = disjoint_parts(), 8
    run = [list(keys) for keys in islice(iter(MixedBatchSampler(parts, WEIGHTS, 0.25, b, seed=1)), 30)]
    again = [list(keys) for keys in islice(iter(MixedBatchSampler(parts, WEIGHTS, 0.25, b, seed=1)), 30)]
    other = [list(keys) for keys in islice(iter(MixedBatchSampler(parts, WEIGHTS, 0.25, b, seed=2)), 30)]
    assert run == again and run != other
    resumed = islice(iter(MixedBatchSampler(parts, WEIGHTS, 0.25, b, seed=1, start=17 * b)), 13)
    assert [list(keys) for keys in resumed] == run[17:]
    ranks = [
        iter(MixedBatchSampler(parts, WEIGHTS, 0.25, b, seed=1, rank=r, world_size=2, start=4 * b)) for r in (0, 1)
    ]
    for step in range(4, 30):
        assert next(ranks[0]) + next(ranks[1]) == run[step]
    positions = [pos for keys in run for _, pos in keys]
    assert positions == list(range(30 * b))  # the augmentations' seeds: the global stream positions


def test_parts_are_read_by_the_selection_reader_and_share_their_items(tmp_path):
    """A sample folder (ids.txt), a selected.parquet and an indices.npy of one source: the training
    set is their union, each part's members are its items; a part of another source follows."""
    images = np.arange(20 * 4, dtype=np.uint8).reshape(20, 2, 2) * 3
    np.save(tmp_path / "pool.npy", images)
    np.save(tmp_path / "seed.npy", images[:3] + 1)
    sample = tmp_path / "sample"
    sample.mkdir()
    (sample / "ids.txt").write_text("4\n2\n9\n")
    pq.write_table(pa.table({"id": ["9", "11"], "index": [9, 11]}), tmp_path / "selected.parquet")
    np.save(tmp_path / "rows.npy", np.array([15, 2], dtype=np.int64))
    data = {
        "kind": "npy",
        "path": str(tmp_path / "pool.npy"),
        "mix": [
            {"selection": str(sample), "weight": 2},
            {"selection": str(tmp_path / "selected.parquet"), "weight": 1},
            {"selection": str(tmp_path / "rows.npy"), "weight": 1},
            {"data": {"kind": "npy", "path": str(tmp_path / "seed.npy")}, "weight": 1},
        ],
        "homogeneous_fraction": 0.5,
    }
    s = open_image_set(data)
    assert s.ids() == [2, 4, 9, 11, 15, 0, 1, 2]  # the pool's union in source order, then the seed set
    ids = s.ids()
    assert [sorted(ids[i] for i in m) for m in s.mix.members[:3]] == [[2, 4, 9], [9, 11], [2, 15]]
    assert [int(i) for i in s.mix.members[3]] == [5, 6, 7]
    assert np.array_equal(s.array(int(s.mix.members[1][1])), images[11])
    assert np.array_equal(s.array(5), images[0] + 1)
    assert s.mix.weights.tolist() == [0.4, 0.2, 0.2, 0.2] and s.mix.homogeneous_fraction == 0.5
    record = s.source.describe()["selection"]
    assert [r["count"] for r in record["mix"]] == [3, 2, 2, 3] and record["mix"][0]["selection"]["file"] == "ids.txt"


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.mix=[{selection: A, weight: 1},{selection: B, weight: -1}]", "data.mix[1].weight"),
        ("data.mix=[{selection: A, weight: 0}]", "data.mix"),
        ("data.mix=[{selection: A, weight: 1}]", "data.selection"),  # both set
        ("data.homogeneous_fraction=1.5", "data.homogeneous_fraction"),
        (
            "data.mix=[{selection: A, weight: 1, data: {kind: npy, path: B, selection: C}}]",
            "data.mix[0].data.selection",
        ),
    ],
)
def test_bad_mix_settings_are_refused_naming_the_key(override, key):
    from conftest import compose_config

    extra = ["data.selection=x"] if key == "data.selection" else []
    with pytest.raises(ValueError, match=key.replace("[", r"\[").replace("]", r"\]")):
        to_train_config(compose_config("train", ["data=npy", "data.path=x", *extra, override]))


def test_a_misspelled_part_key_is_refused_when_composed():
    from conftest import compose_config
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="wieght"):
        compose_config("train", ["data=npy", "data.path=x", "data.mix=[{selection: A, wieght: 1}]"])


def run_train(monkeypatch, args: list[str]) -> None:
    """What ``python -m selfsup.train <args>`` does, in process."""
    import selfsup.train

    monkeypatch.setattr(sys, "argv", ["selfsup.train", *args])
    selfsup.train.main()


def test_mix_errors_are_one_line_naming_the_key(tmp_path, monkeypatch, capsys):
    np.save(tmp_path / "pool.npy", np.zeros((8, 28, 28), dtype=np.uint8))
    np.save(tmp_path / "rows.npy", np.arange(4, dtype=np.int64))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    base = [f"out={tmp_path / 'run'}", "data=npy", f"data.path={tmp_path / 'pool.npy'}", "train.iterations=1"]
    rows = tmp_path / "rows.npy"
    cases = {
        "data.mix[1].weight": f"data.mix=[{{selection: {rows}}},{{selection: {tmp_path}, weight: -2}}]",
        "data.mix[1].selection": (f"data.mix=[{{selection: {rows}}},{{selection: {tmp_path / 'missing'}, weight: 1}}]"),
    }
    for key, override in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            run_train(monkeypatch, [*base, override])
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
        assert exit_info.value.code == 2 and len(errors) == 1 and key in errors[0], errors
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_tiny_training_run_with_data_mix(tmp_path, monkeypatch):
    """``python -m selfsup.train data.mix=[...] data.homogeneous_fraction=...`` on the tiny trainer
    settings: the manifest records the parts and what each gave (zero for a zero weight), every
    drawn item belongs to a part, and a second run resumes to the same record."""
    from test_selfsup_train import TINY

    rng = np.random.default_rng(0)
    np.save(tmp_path / "pool.npy", rng.integers(0, 256, (40, 28, 28), dtype=np.uint8))
    sample = tmp_path / "sample"
    sample.mkdir()
    (sample / "ids.txt").write_text("".join(f"{i}\n" for i in range(0, 40, 2)))  # 20 even rows
    pq.write_table(pa.table({"id": ["1", "3", "5"], "index": [1, 3, 5]}), tmp_path / "selected.parquet")
    np.save(tmp_path / "rows.npy", np.array([7, 9], dtype=np.int64))
    mix = (
        f"data.mix=[{{selection: {sample}, weight: 3}}, {{selection: {tmp_path / 'selected.parquet'}, weight: 1}},"
        f" {{selection: {tmp_path / 'rows.npy'}, weight: 0}}]"
    )
    out = tmp_path / "run"
    args = [f"out={out}", "data=npy", f"data.path={tmp_path / 'pool.npy'}", *TINY, "train.iterations=3", mix]
    run_train(monkeypatch, [*args, "data.homogeneous_fraction=0.5", "train.num_workers=0"])
    manifest = json.loads((out / "manifest.json").read_text())
    parts = manifest["selection"]["mix"]
    assert [p["count"] for p in parts] == [20, 3, 2] and [p["weight"] for p in parts] == [3.0, 1.0, 0.0]
    drawn = [p["drawn"] for p in parts]
    assert sum(drawn) == 3 * 16 and drawn[0] > 0 and drawn[2] == 0, drawn
    assert manifest["n_train"] == 25 and manifest["selection"]["homogeneous_fraction"] == 0.5
    assert (out / "train_ids.txt").read_text().split() == sorted(
        [*map(str, range(0, 40, 2)), "1", "3", "5", "7", "9"], key=int
    )
    assert 0 < manifest["distinct_items_seen"] <= 23  # never the zero-weight part's two items
    run_train(monkeypatch, [*args, "data.homogeneous_fraction=0.5", "train.num_workers=0"])  # resumes: done
    assert json.loads((out / "manifest.json").read_text())["selection"] == manifest["selection"]


def test_other_stages_refuse_a_mix_and_a_bad_part_names_its_key(tmp_path):
    from curate.data.sources import build_source
    from curate.embed.config import MixPartConfig, NpyDataConfig

    np.save(tmp_path / "pool.npy", np.zeros((5, 2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="data.mix: only selfsup.train mixes selections"):
        build_source(NpyDataConfig(path=str(tmp_path / "pool.npy"), mix=[MixPartConfig(selection="x")]))
    pq.write_table(pa.table({"id": ["1", "7"], "index": [1, 7]}), tmp_path / "selected.parquet")
    data = {
        "kind": "npy",
        "path": str(tmp_path / "pool.npy"),
        "mix": [{}, {"selection": str(tmp_path / "selected.parquet")}],
    }
    with pytest.raises(
        ValueError, match=r"data\.mix\[1\]\.selection .*selected.parquet: 1 id\(s\) are not in the source"
    ):
        open_image_set(data)
