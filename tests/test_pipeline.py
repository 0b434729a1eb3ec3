"""curate.pipeline: one data registry from embed to train, the stages chained through their files,
skip / resume / re-run of what changed, the summary contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config
from PIL import Image

from curate.pipeline import STAMP, balanced_rows, no_tail_rows, run_pipeline
from curate.sampling import water_fill

TINY_TRAIN = (
    "{model: {depth: 1, embed_dim: 32, num_heads: 2},"
    " dino: {head: {n_prototypes: 64, hidden_dim: 32, bottleneck_dim: 16}},"
    " ibot: {head: {n_prototypes: 64, hidden_dim: 32, bottleneck_dim: 16}}, crops: {local_number: 1},"
    " train: {batch_size: 16, iterations: 4, num_workers: 0, log_every: 2, checkpoint_every: 2}}"
)
TINY = [
    "++embed={batch_size: 64, num_workers: 0, progress: false}",
    "++dedup={threshold: 0.99}",
    "++cluster={cluster: {name: tiny, levels: [{k: 12, resample_steps: 1, sample_size: 2},"
    " {k: 3, resample_steps: 1, sample_size: 2}], n_iter: 5}}",
    "++sample={targets: [40], plot: false}",
    f"++train={TINY_TRAIN}",
    "++eval.eval={knn_k: 5, linear_epochs: 2, linear_lrs: [0.01], num_workers: 0}",
]


@pytest.fixture(scope="module")
def folders(fmnist_folders) -> Path:
    return fmnist_folders


def pipeline_cfg(folders: Path, *overrides: str):
    base = [
        "data=image_folder",
        f"data.root={folders / 'pool'}",
        "data.labels_from_dirs=true",
        f"eval.train_root={folders / 'train'}",
        f"eval.test_root={folders / 'test'}",
        "name=tiny",
    ]
    return compose_config("pipeline", [*base, *TINY, *overrides])


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_train_on_an_image_folder_selection_sees_exactly_the_selected_ids(tmp_path):
    """embed skips an unreadable file, so store rows and folder positions differ; the trainer still
    trains on exactly the items the selection names, matched by id."""
    from omegaconf import OmegaConf

    from curate.embed.run import run_embed
    from curate.pipeline import compose_stage
    from selfsup.train import train

    rng = np.random.default_rng(0)
    root = tmp_path / "pool"
    for i in range(30):
        folder = root / f"c{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L").save(folder / f"{i:02d}.png")
    (root / "c0" / "00_broken.png").write_bytes(b"not a png")  # sorted first: shifts every later row
    overrides = ["num_workers=0", "progress=false", "data=image_folder", f"data.root={root}"]
    cfg = compose_stage("embed", [f"out={tmp_path / 'store'}", *overrides])
    cfg.data.labels_from_dirs = True
    data = OmegaConf.to_container(cfg.data)
    manifest = run_embed(cfg)
    assert manifest["count"] == 30 and manifest["skipped"] == 1
    ids = [line for line in lines(tmp_path / "store" / "ids-00000.txt")]
    chosen = sorted(rng.choice(30, size=11, replace=False).tolist())
    sample = tmp_path / "sample"
    sample.mkdir()
    (sample / "ids.txt").write_text("".join(f"{ids[i]}\n" for i in chosen))
    np.save(sample / "indices.npy", np.asarray(chosen, dtype=np.int64))  # store rows: not folder positions
    tcfg = compose_stage("train", [f"out={tmp_path / 'run'}"])
    OmegaConf.update(tcfg, "data", {**data, "selection": str(sample)}, merge=False)
    tcfg = OmegaConf.merge(tcfg, OmegaConf.create(TINY_TRAIN.replace("iterations: 4", "iterations: 2")))
    summary = train(tcfg)
    assert lines(tmp_path / "run" / "train_ids.txt") == [ids[i] for i in chosen]
    assert summary["n_train"] == 11 and summary["distinct_items_seen"] == 11  # 2 x 16 draws cover the 11
    selection = json.loads((tmp_path / "run" / "manifest.json").read_text())["selection"]
    assert selection["count"] == 11 and selection["file"] == "ids.txt"
    assert len(selection["sha1"]) == 40


def test_pipeline_end_to_end_then_skips_what_is_done(tmp_path, folders):
    cfg = pipeline_cfg(folders, "baselines=[random,full]")
    summary = run_pipeline(cfg, tmp_path / "tiny")
    root = tmp_path / "tiny"
    assert json.loads((root / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["pool_size"] == 150 and 0 < summary["kept_after_dedup"] <= 150
    assert summary["sample_size"] == 40 and summary["train_images"] == 40 and summary["n_train"] == 40
    # the trainer saw exactly the sampled items, by id
    assert sorted(lines(root / "train" / "train_ids.txt")) == sorted(lines(root / "sample" / "ids.txt"))
    for key in ("knn_top1", "linear_top1"):
        assert 0.0 <= summary[key] <= 100.0
    assert summary["knn_tail"] is not None  # pool labels (from the class folders) name the tail
    random, full = summary["baselines"]["random"], summary["baselines"]["full"]
    assert random["n_train"] == 40 and full["n_train"] == summary["kept_after_dedup"]
    assert set(lines(root / "sample_random" / "ids.txt")) <= set(lines(root / "dedup" / "kept_ids.txt"))
    for stage in ("embed", "dedup", "cluster", "sample", "train", "eval"):
        assert json.loads((root / stage / STAMP).read_text())["status"] == "complete"
    # a second run skips every stage
    again = run_pipeline(pipeline_cfg(folders, "baselines=[random,full]"), root)
    assert not any(entry["ran"] for entry in again["stages"].values())
    assert again["knn_top1"] == summary["knn_top1"]


class SimulatedKill(BaseException):
    """Like a SIGKILL for the code under test: no ``except Exception`` handler catches it."""


def test_resume_after_a_kill_and_rerun_of_what_changed_only(tmp_path, folders, monkeypatch):
    import selfsup.train

    real_save = selfsup.train.save_checkpoint

    def save_then_die(path, meta, optimizer, state):
        real_save(path, meta, optimizer, state)
        raise SimulatedKill  # killed right after the checkpoint of iteration 2 (of 4)

    root = tmp_path / "tiny"
    monkeypatch.setattr(selfsup.train, "save_checkpoint", save_then_die)
    with pytest.raises(SimulatedKill):
        run_pipeline(pipeline_cfg(folders), root)
    assert json.loads((root / "train" / STAMP).read_text())["status"] == "running"
    monkeypatch.setattr(selfsup.train, "save_checkpoint", real_save)
    cluster_manifest = (root / "cluster" / "manifest.json").stat().st_mtime_ns
    summary = run_pipeline(pipeline_cfg(folders), root)
    ran = {stage for stage, entry in summary["stages"].items() if entry["ran"]}
    assert ran == {"train", "eval"}
    assert json.loads((root / "train" / STAMP).read_text())["result"]["start_iteration"] == 2  # resumed
    assert summary["train_images"] == 40

    # a changed train setting re-runs train and eval, not the clustering
    changed = TINY_TRAIN.replace("iterations: 4", "iterations: 6")
    summary = run_pipeline(pipeline_cfg(folders, f"++train={changed}"), root)
    assert {s for s, e in summary["stages"].items() if e["ran"]} == {"train", "eval"}
    assert (root / "cluster" / "manifest.json").stat().st_mtime_ns == cluster_manifest
    assert json.loads((root / "train" / "manifest.json").read_text())["iterations"] == 6
    assert json.loads((root / "train" / STAMP).read_text())["result"]["start_iteration"] == 0  # a fresh run

    # a changed sample budget re-runs sample and everything after it
    summary = run_pipeline(pipeline_cfg(folders, f"++train={changed}", "sample.targets=[30]"), root)
    assert {s for s, e in summary["stages"].items() if e["ran"]} == {"sample", "train", "eval"}
    assert summary["sample_size"] == 30 and summary["train_images"] == 30


def brute_water_fill_bounds(sizes: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class the least and the most a water-fill of ``budget`` may give: with ``x`` the largest
    cap such that ``sum(min(x, sizes)) <= budget`` (searched one by one), ``min(x, s)`` and ``min(x + 1, s)``."""
    x = 0
    while x <= sizes.max() and np.minimum(x + 1, sizes).sum() <= budget:
        x += 1
    return np.minimum(x, sizes), np.minimum(x + 1, sizes)


def test_balanced_rows_are_a_water_fill_of_the_class_sizes():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(5), [50, 20, 5, 2, 30]))
    sizes = np.bincount(labels)
    for budget in (1, 13, 40, 106, 107, 500):
        rows = balanced_rows(labels, budget, np.random.default_rng(3))
        counts = np.bincount(labels[rows], minlength=5)
        assert len(np.unique(rows)) == len(rows) == min(budget, 107)  # no duplicates, the budget
        assert counts.tolist() == water_fill(sizes, budget, np.random.default_rng(3)).tolist()
        low, high = brute_water_fill_bounds(sizes, budget)
        assert np.all(low <= counts) and np.all(counts <= high)
    again = balanced_rows(labels, 40, np.random.default_rng(3))
    assert np.array_equal(again, balanced_rows(labels, 40, np.random.default_rng(3)))  # a seed: one selection
    assert not np.array_equal(again, balanced_rows(labels, 40, np.random.default_rng(4)))
    # random items inside a class: class 0's quota is 11 (11 + 11 + 5 + 2 + 11 = 40), each of its 50
    # items is picked 11 / 50 of the time (binomial sd over 400 seeds: 0.021)
    picked = np.zeros(len(labels))
    for seed in range(400):
        picked[balanced_rows(labels, 40, np.random.default_rng(seed))] += 1
    share = picked[labels == 0] / 400
    assert share.mean() == pytest.approx(11 / 50) and share.min() > 0.13 and share.max() < 0.31


def test_no_tail_rows_leave_out_the_tail_and_draw_uniformly():
    labels = np.repeat(np.arange(4), [6, 9, 3, 2])
    tail = [2, 3]
    picked = np.zeros(len(labels))
    for seed in range(3000):
        rows = no_tail_rows(labels, 5, tail, np.random.default_rng(seed))
        assert len(np.unique(rows)) == len(rows) == 5 and not np.isin(labels[rows], tail).any()
        picked[rows] += 1
    assert np.all(np.abs(picked[labels < 2] / 3000 - 5 / 15) < 0.04) and picked[labels >= 2].sum() == 0
    first = no_tail_rows(labels, 5, tail, np.random.default_rng(1))
    assert np.array_equal(first, no_tail_rows(labels, 5, tail, np.random.default_rng(1)))
    assert not np.array_equal(first, no_tail_rows(labels, 5, tail, np.random.default_rng(2)))
    assert len(no_tail_rows(labels, 40, tail, np.random.default_rng(0))) == 15  # budget above what is left: all


CONTROL_STAGES = [f"{kind}_{name}" for name in ("balanced", "no_tail") for kind in ("sample", "train", "eval")]


def test_the_positive_control_runs_before_the_curation_and_a_rerun_skips_it(tmp_path, folders, monkeypatch, caplog):
    """balanced / no_tail: selected, trained and evaluated from the dedup'd pool before cluster runs
    (cluster is killed here: the control is finished anyway); a re-run skips them."""
    import dataclasses

    import curate.cluster

    real_stage, root = curate.cluster.STAGE, tmp_path / "tiny"

    def killed(cfg):
        raise SimulatedKill

    monkeypatch.setattr(curate.cluster, "STAGE", dataclasses.replace(real_stage, run=killed))  # what the pipeline calls
    with pytest.raises(SimulatedKill), caplog.at_level("INFO", logger="curate.pipeline"):
        run_pipeline(pipeline_cfg(folders, "baselines=[balanced,no_tail]"), root)
    tails = [
        json.loads((root / f"eval_{n}" / STAMP).read_text())["result"]["knn_tail"] for n in ("balanced", "no_tail")
    ]
    assert f"balanced minus no_tail: knn_tail {tails[0] - tails[1]:+.1f}" in caplog.text  # known before cluster
    assert all(json.loads((root / s / STAMP).read_text())["status"] == "complete" for s in CONTROL_STAGES)
    assert json.loads((root / "cluster" / STAMP).read_text())["status"] == "running" and not (root / "sample").exists()

    store_ids = lines(root / "embed" / "ids-00000.txt")
    labels = np.load(root / "embed" / "labels.npy")
    names = json.loads((root / "embed" / "label_names.json").read_text())
    row = {i: r for r, i in enumerate(store_ids)}
    kept = set(lines(root / "dedup" / "kept_ids.txt"))
    sizes = np.bincount(labels[[row[i] for i in kept]], minlength=len(names))
    picks, results = {}, {}
    for name in ("balanced", "no_tail"):
        ids = lines(root / f"sample_{name}" / "ids.txt")
        assert len(set(ids)) == len(ids) == 40 and set(ids) <= kept  # the budget, from the dedup'd pool
        assert sorted(lines(root / f"train_{name}" / "train_ids.txt")) == sorted(ids)  # trained on it
        picks[name] = np.bincount(labels[[row[i] for i in ids]], minlength=len(names))
        results[name] = json.loads((root / f"sample_{name}" / STAMP).read_text())["result"]
        assert results[name]["class_counts"] == picks[name].tolist() and results[name]["budget"] == 40
    low, high = brute_water_fill_bounds(sizes, 40)
    assert np.all(low <= picks["balanced"]) and np.all(picks["balanced"] <= high)
    # no_tail: none of the pool's 3 rarest classes (counted from the folder the pool was written to)
    pool = json.loads((folders / "splits.json").read_text())
    present = [(n, c) for n, c in zip(pool["classes"], pool["folders"]["pool"]["class_counts"]) if c]
    rarest = {n for n, _ in sorted(present, key=lambda nc: nc[1])[:3]}  # stable: ties by class order
    assert {names[c] for c in results["no_tail"]["tail_classes"]} == rarest
    assert (
        all(picks["no_tail"][names.index(n)] == 0 for n in rarest) and picks["balanced"][names.index(min(rarest))] > 0
    )

    monkeypatch.setattr(curate.cluster, "STAGE", real_stage)
    summary = run_pipeline(pipeline_cfg(folders, "baselines=[balanced,no_tail]"), root)
    order = list(summary["stages"])
    assert order[order.index("dedup") + 1 : order.index("cluster")] == CONTROL_STAGES  # the control first
    assert {s for s, e in summary["stages"].items() if e["ran"]} == {"cluster", "sample", "train", "eval"}
    for name in ("balanced", "no_tail"):
        entry = summary["baselines"][name]
        assert entry["selection"]["class_counts"] == picks[name].tolist() and entry["n_train"] == 40
        assert 0.0 <= entry["knn_top1"] <= 100.0


def test_label_oracles_without_pool_labels_are_refused_through_the_cli(tmp_path, folders, cli):
    args = [
        "-m",
        "curate.pipeline",
        "+experiment=curation_ssl_quick",
        "data=image_folder",
        f"data.root={folders / 'pool'}",  # data.labels_from_dirs left false: the store has no labels
        f"eval.train_root={folders / 'train'}",
        f"eval.test_root={folders / 'test'}",
        "name=nolabels",
        f"out_dir={tmp_path}",
        "baselines=[random,no_tail]",
        *TINY,
    ]
    proc = cli(*args, check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and last.startswith("error: baselines: no_tail ")
    assert "data.labels_from_dirs=true" in last
    assert not (tmp_path / "nolabels" / "embed").exists()  # refused before any stage ran


def test_a_folder_not_made_by_the_pipeline_is_refused(tmp_path, folders):
    (tmp_path / "tiny" / "cluster").mkdir(parents=True)
    (tmp_path / "tiny" / "cluster" / "precious.txt").write_text("mine")
    with pytest.raises(ValueError, match="not made by curate.pipeline"):
        run_pipeline(pipeline_cfg(folders), tmp_path / "tiny")
    assert (tmp_path / "tiny" / "cluster" / "precious.txt").read_text() == "mine"


@pytest.mark.slow
def test_contract_command_line(tmp_path, folders, cli):
    """The documented command (+experiment=curation_ssl_quick), shrunk by overrides; a bad input is
    one error line and exit code 2."""
    args = [
        "-m",
        "curate.pipeline",
        "+experiment=curation_ssl_quick",
        "data=image_folder",
        f"data.root={folders / 'pool'}",
        f"eval.train_root={folders / 'train'}",
        f"eval.test_root={folders / 'test'}",
        "name=contract",
        f"out_dir={tmp_path}",
        "data.labels_from_dirs=true",  # the quick preset runs the positive control too (it needs the labels)
        "baselines=[random,no_tail,balanced]",
        *TINY,
    ]
    cli(*args)
    summary = json.loads((tmp_path / "contract" / "summary.json").read_text())
    for key in ("pool_size", "kept_after_dedup", "sample_size", "train_images", "knn_top1", "linear_top1"):
        assert key in summary
    assert summary["train_images"] == summary["sample_size"] == 40 and "random" in summary["baselines"]
    assert all(summary["baselines"][name]["train_images"] == 40 for name in ("no_tail", "balanced"))
    bad = cli(*[a if not a.startswith("data.root=") else f"data.root={tmp_path / 'nope'}" for a in args], check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "nope" in bad.stderr


def run_main(monkeypatch, args: list[str]) -> None:
    """``python -m curate.pipeline <args>`` in this process."""
    import sys

    import curate.pipeline

    monkeypatch.setattr(sys, "argv", ["curate.pipeline", *args])
    curate.pipeline.main()


def test_submit_queues_one_dependent_job_per_stage_on_slurm(tmp_path, folders, fake_slurm, monkeypatch, capsys):
    import submitit

    args = [
        "data=image_folder",
        f"data.root={folders / 'pool'}",
        "name=chain",
        f"out_dir={tmp_path}",
        "launcher=submitit_slurm",
        "submit=true",
        "hydra.launcher.partition=p",
        "resources={embed: {gpus_per_node: 1, tasks_per_node: 1}, train: {gpus_per_node: 1, tasks_per_node: 1},"
        " cluster: {gpus_per_node: 0, tasks_per_node: 1, cpus_per_task: 32}}",
    ]
    run_main(monkeypatch, args)
    stages = ["embed", "dedup", "cluster", "sample", "train", "eval"]
    assert sorted(p.name for p in fake_slurm.iterdir()) == [f"{1001 + i}.sh" for i in range(6)]
    printed = capsys.readouterr().out
    flags = {s: {x for x in (fake_slurm / f"{1001 + i}.sh").read_text().splitlines() if x.startswith("#SBATCH")}
             for i, s in enumerate(stages)}  # fmt: skip
    for i, stage in enumerate(stages):
        assert f"{stage}: job {1001 + i}" in printed
        assert f"#SBATCH --job-name=chain-{stage}" in flags[stage] and "#SBATCH --partition=p" in flags[stage]
        assert (f"#SBATCH --dependency=afterok:{1000 + i}" in flags[stage]) == (i > 0)
    assert "#SBATCH --gpus-per-node=1" in flags["train"] and "#SBATCH --gpus-per-node=1" in flags["embed"]
    assert "#SBATCH --cpus-per-task=32" in flags["cluster"] and "#SBATCH --cpus-per-task=10" in flags["sample"]
    assert not any(f.startswith("#SBATCH --gpus-per-node=") and not f.endswith("=0") for f in flags["sample"])
    folder = tmp_path / "chain" / ".submitit"
    job = submitit.SlurmJob(folder=folder / "%j", job_id="1005").submission().function
    assert job.stage == "curate.pipeline" and "only=train" in job.overrides and "submit=true" not in job.overrides
    listed = json.loads((tmp_path / "chain" / "submit.json").read_text())["jobs"]
    assert listed[4] == {"stage": "train", "job_id": "1005"}


@pytest.mark.slow
@pytest.mark.long
def test_submitted_chain_runs_through_submitit_local(tmp_path, folders, monkeypatch):
    args = [
        "data=image_folder",
        f"data.root={folders / 'pool'}",
        f"eval.train_root={folders / 'train'}",
        f"eval.test_root={folders / 'test'}",
        "name=local",
        f"out_dir={tmp_path}",
        "stages=[embed,cluster,sample,train,eval]",
        "launcher=submitit_local",
        "submit=true",
        *TINY,
    ]
    run_main(monkeypatch, args)
    root = tmp_path / "local"
    jobs = json.loads((root / "submit.json").read_text())
    assert [j["stage"] for j in jobs["jobs"]] == ["embed", "cluster", "sample", "train", "eval"]
    assert jobs["executor"] == "local"
    assert sorted(p.name for p in (root / ".submitit").iterdir() if p.name.isdigit()) == sorted(
        j["job_id"] for j in jobs["jobs"]
    )
    summary = json.loads((root / "summary.json").read_text())  # written by the eval job
    assert summary["train_images"] == summary["sample_size"] == 40
    assert summary["kept_after_dedup"] == summary["pool_size"] == 150  # no dedup stage


def test_base_model_embeds_the_pool_and_later_stages_are_optional(tmp_path, folders):
    """base.root trains the curation embedding first; stages=[embed,cluster,sample] stops there."""
    cfg = pipeline_cfg(
        folders,
        f"base.root={folders / 'seed'}",
        "++base.train={train: {iterations: 2}}",
        "stages=[embed,cluster,sample]",
    )
    summary = run_pipeline(cfg, tmp_path / "tiny")
    root = tmp_path / "tiny"
    assert {s for s, e in summary["stages"].items() if e["ran"]} == {"base", "embed", "cluster", "sample"}
    base = json.loads((root / "base" / "manifest.json").read_text())
    assert base["iterations"] == 2 and base["n_train"] == 20  # the seed folder, not the pool
    store = json.loads((root / "embed" / "manifest.json").read_text())
    assert store["meta"]["encoder_config"]["kind"] == "selfsup"
    assert store["meta"]["encoder_config"]["checkpoint"] == str(root / "base" / "backbone.pt")
    assert summary["sample_size"] == 40 and "knn_top1" not in summary and not (root / "train").exists()


def test_a_changed_setting_recomputes_the_stage_in_place_and_keeps_a_users_files(tmp_path, folders):
    """No rmtree of a stage folder: the files its runs wrote are replaced, a user's stay."""
    root = tmp_path / "tiny"
    stages = "stages=[embed,cluster,sample]"
    run_pipeline(pipeline_cfg(folders, stages), root)
    for stage in ("cluster", "sample"):
        (root / stage / "notes.txt").write_text("mine")
    (root / "cluster" / "level2" / "mine.txt").write_text("mine")  # inside a folder the stage made
    before = (root / "embed" / "manifest.json").stat().st_mtime_ns
    two_levels = "cluster.cluster.levels=[{k: 12, resample_steps: 1, sample_size: 2}]"  # level2 no longer built
    summary = run_pipeline(pipeline_cfg(folders, stages, two_levels, "sample.targets=[30]"), root)
    assert {s for s, e in summary["stages"].items() if e["ran"]} == {"cluster", "sample"}
    assert (root / "embed" / "manifest.json").stat().st_mtime_ns == before
    for stage in ("cluster", "sample"):
        assert (root / stage / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (root / "cluster" / "level2").iterdir()) == ["mine.txt"]  # its arrays are gone
    assert len(json.loads((root / "cluster" / "manifest.json").read_text())["levels"]) == 1
    assert summary["sample_size"] == 30
    fresh = run_pipeline(pipeline_cfg(folders, stages, two_levels, "sample.targets=[30]"), tmp_path / "fresh")
    np.testing.assert_array_equal(
        np.load(root / "sample" / "indices.npy"), np.load(tmp_path / "fresh" / "sample" / "indices.npy")
    )
    assert fresh["sample_size"] == 30
