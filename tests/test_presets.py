"""Presets that scale (issue 21, item 8): a level's ``k`` relative to its input (a fraction or
``auto``), resolved once the input count is known and recorded resolved; the pipeline checks every
level and the sampling budget against the pool as soon as embed / dedup have counted it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import compose_config
from test_errors import _one_error_line
from test_pipeline import TINY

from curate.hierarchy.levels import LevelSpec, resolve_levels, validate_levels
from curate.pipeline import Pipeline, check_sizes, run_pipeline

# the quick preset's own cluster and sample nodes stay: only embed / train / eval are shrunk
SHRUNK = [o for o in TINY if not o.startswith(("++cluster=", "++sample="))] + ["++sample={plot: false}"]


def reference_k(k, n: int, sample_size: int, cap: int) -> int:
    """The documented rule, written out: a fraction f gives f * n, auto n / (2 r), halves rounded up,
    kept within [1, cap]."""
    wanted = k * n if isinstance(k, float) else n / (2 * sample_size) if k == "auto" else k
    return k if isinstance(k, int) else max(1, min(cap, math.floor(wanted + 0.5)))


@pytest.mark.parametrize("n", [1, 2, 7, 150, 1275, 14426, 10**9])
@pytest.mark.parametrize(
    "levels",
    [
        [{"k": 0.104, "sample_size": 5}, {"k": 0.2, "sample_size": 3}, {"k": 0.1667, "sample_size": 3}],
        [{"k": "auto", "sample_size": 5}, {"k": "auto", "sample_size": 3}, {"k": "auto", "sample_size": 2}],
        [{"k": 0.5, "n_splits": 3}, {"k": 0.9}],
    ],
    ids=["fractions", "auto", "split"],
)
def test_relative_k_resolves_by_the_documented_rule(levels, n):
    specs = [LevelSpec.of(level) for level in levels]
    resolved, n_input = [], n
    for t, spec in enumerate(specs, start=1):
        if t > 1 and n_input < 2:
            with pytest.raises(ValueError, match=rf"levels\[{t - 1}\] \(level {t}\): k=.* leaves no clusters"):
                resolve_levels(specs, n)
            return
        k = reference_k(spec.k, n_input, spec.sample_size, n_input if t == 1 else n_input - 1)
        resolved.append(k)
        n_input = k * spec.n_splits
    got = resolve_levels(specs, n)
    assert [s.k for s in got] == resolved
    assert all(isinstance(s.k, int) and not s.relative for s in got)
    # what stays of each level is the given spec but k
    assert [{**s.record(), "k": 0} for s in got] == [{**s.record(), "k": 0} for s in specs]


def test_level_k_must_be_a_count_a_fraction_or_auto():
    for bad, match in [
        (1.0, r"fraction of the level's input must be in \(0, 1\)"),
        (1500.0, r"must be in \(0, 1\)"),
        (-0.1, r"must be in \(0, 1\)"),
        ("0.1", "an int count, a fraction in"),
        ("all", "an int count, a fraction in"),
        (True, "an int count, a fraction in"),
        (0, "k must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=match):
            validate_levels([LevelSpec.of({"k": bad, "sample_size": 2})])
    with pytest.raises(ValueError, match=r"levels\[0\] \(level 1\): k=auto reads sample_size"):
        validate_levels([LevelSpec.of({"k": "auto"})])
    with pytest.raises(ValueError, match=r"levels\[1\] \(level 2\): k=40 must be smaller than the 30 clusters"):
        resolve_levels([LevelSpec.of({"k": 0.3}), LevelSpec.of({"k": 40})], 100)  # known once n is
    validate_levels([LevelSpec.of({"k": 0.3}), LevelSpec.of({"k": 40})])  # without n: cannot be told yet


@pytest.mark.parametrize(
    "experiment, extra, n, ks, budget",
    [
        # the docs' runs: the fractions give their absolute settings on their pools
        ("curation_ssl", ["base.root=seed"], 14691, [1500, 300, 50], 4000),
        ("curation_ssl_quick", [], 14426, [1500, 300, 50], 4000),
        ("curation_ssl_quick", [], 1275, [133, 27, 5], 354),  # the 1,276-image folder after dedup
        ("curation_ssl_quick", [], 100, [10, 2, 1], 28),
        ("curation_ssl_resnet", ["base.root=seed"], 500, [51, 10, 2], 136),
        ("curation_ssl_gpu", ["base.root=seed"], 500, [51, 10, 2], 136),
    ],
)
def test_presets_resolve_on_small_and_large_pools(experiment, extra, n, ks, budget):
    cfg = compose_config("pipeline", [f"+experiment={experiment}", "data=image_folder", "data.root=pool", *extra])
    pipeline = Pipeline(cfg, Path("unused"))
    specs = check_sizes(pipeline.cluster_config(), pipeline.sample_config(), n, "test")
    assert [s.k for s in specs] == ks
    from curate.sampling import resolve_target

    assert resolve_target(pipeline.sample_config().targets[0], n) == budget
    if experiment == "curation_ssl_quick":  # below ~73 items level 2 keeps one cluster: level 3 cannot follow
        with pytest.raises(ValueError, match=r"cluster.cluster.levels\[2\] \(level 3\): k=0.1667 leaves no clusters"):
            check_sizes(pipeline.cluster_config(), None, 60, "test")


def test_quick_preset_runs_on_a_small_folder_and_records_the_resolved_levels(tmp_path, fmnist_folders):
    """The quick preset's own levels and budget (fractions) on a 150-image folder; a real run with a
    shrunk trainer. The manifest records each level's k as given and as resolved."""
    args = ["+experiment=curation_ssl_quick", "data=image_folder", f"data.root={fmnist_folders / 'pool'}"]
    args += [f"eval.train_root={fmnist_folders / 'train'}", f"eval.test_root={fmnist_folders / 'test'}"]
    cfg = compose_config("pipeline", [*args, "name=quick", *SHRUNK])
    summary = run_pipeline(cfg, tmp_path / "quick")
    n = summary["kept_after_dedup"]
    manifest = json.loads((tmp_path / "quick" / "cluster" / "manifest.json").read_text())
    given = [level["k"] for level in manifest["config"]["levels"]]
    assert given == [0.104, 0.2, 0.1667]  # the preset's fractions: the clustering's identity
    built = [level["spec"]["k"] for level in manifest["levels"]]
    assert built == [s.k for s in resolve_levels([LevelSpec.of({"k": k}) for k in given], n)]
    assert built == [level["k"] for level in manifest["levels"]]  # no cluster came out empty here
    assert summary["sample_size"] == round(0.2773 * n) == summary["train_images"]


@pytest.mark.slow
def test_pipeline_refuses_a_k_above_the_pool_before_the_clustering(tmp_path, fmnist_folders, cli):
    """An absolute k larger than the deduplicated pool: one error line naming the key, after embed /
    dedup counted the pool and before the clustering (or any training) started."""
    args = ["-m", "curate.pipeline", "+experiment=curation_ssl_quick", "data=image_folder"]
    args += [f"data.root={fmnist_folders / 'pool'}", f"out_dir={tmp_path}", "name=big", "stages=[embed,dedup,cluster]"]
    args += [*SHRUNK, "cluster.cluster.levels=[{k: 1500, resample_steps: 3, sample_size: 5}, {k: 0.2}]"]
    line = _one_error_line(cli(*args, check=False), "cluster.cluster.levels[0] (level 1): k=1500 exceeds", "k: auto")
    assert "after dedup of 150 embedded" in line
    assert (tmp_path / "big" / "dedup" / "kept_ids.txt").exists() and not (tmp_path / "big" / "cluster").exists()


def test_pipeline_refuses_a_budget_above_the_pool_before_the_clustering(tmp_path, fmnist_folders):
    args = ["+experiment=curation_ssl_quick", "data=image_folder", f"data.root={fmnist_folders / 'pool'}"]
    cfg = compose_config("pipeline", [*args, "name=budget", "stages=[embed,dedup,cluster,sample]", *SHRUNK])
    cfg.sample.targets = [400]
    with pytest.raises(
        ValueError, match=r"sample.targets\[0\]=400 asks for 400 of the n=\d+ items \(after dedup of 150"
    ):
        run_pipeline(cfg, tmp_path / "budget")
    assert (tmp_path / "budget" / "dedup" / "kept_ids.txt").exists() and not (tmp_path / "budget" / "cluster").exists()
