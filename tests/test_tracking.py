"""The metric tracker: JSONL always, wandb only when asked, never waiting on a network."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import compose_config

import curate.cluster  # noqa: F401  (registers the schemas)
from curate.core.tracking import Tracker, flatten_scalars, stage_tracker


def test_disabled_writes_only_the_jsonl_and_never_imports_wandb(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # any `import wandb` would now raise ImportError
    with Tracker(tmp_path / "run", mode="disabled", config={"a": 1}) as tracker:
        tracker.log({"inertia": np.float32(2.5), "sizes": [1, 2], "split": {"k": 3}}, step=1)
        tracker.log({"inertia": 2.0}, step=2)
        tracker.summary({"final": 1.0})
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["metrics.jsonl"]
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"step": 1, "inertia": 2.5, "sizes": [1, 2], "split": {"k": 3}}, {"step": 2, "inertia": 2.0}]
    # appends by default, starts over with fresh=True
    Tracker(tmp_path / "run").log({"x": 1})
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3
    Tracker(tmp_path / "run", fresh=True).log({"x": 1})
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_env_kill_switch_and_bad_mode(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracker = Tracker(tmp_path, mode="offline")
    assert tracker.mode == "disabled" and tracker.run is None
    with pytest.raises(ValueError, match="logger.wandb.mode"):
        Tracker(tmp_path, mode="sometimes")


def test_flatten_scalars():
    flat = flatten_scalars({"a": np.int64(3), "b": {"c": 1.5, "d": [1]}, "e": None, "f": "x"})
    assert flat == {"a": 3, "b/c": 1.5, "f": "x"}


def test_online_without_network_falls_back_to_an_offline_run_under_out(tmp_path, monkeypatch):
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    real_init = wandb.init
    modes = []

    def init(*args, mode=None, **kwargs):
        modes.append(mode)
        if mode != "offline":
            raise RuntimeError("no network here")  # what an unreachable server or a missing API key gives
        return real_init(*args, mode=mode, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    cfg = compose_config("cluster", ["logger.wandb.mode=online", "logger.wandb.init_timeout_s=5"])
    out = tmp_path / "cluster" / "toy_2d"
    with stage_tracker(cfg, out, "cluster") as tracker:
        assert modes == ["online", "offline"] and tracker.mode == "offline"
        tracker.log({"level": 1, "inertia": 2.5, "stats": {"k": 30}}, step=1)
        tracker.summary({"kl_top": 0.1})
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    logged = json.loads((out / "metrics.jsonl").read_text())
    assert logged == {"step": 1, "level": 1, "inertia": 2.5, "stats": {"k": 30}}


class _FakeRun:
    """Records what a wandb run is asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def log(self, data, step=None):
        self.calls.append(("log", data, step))

    def define_metric(self, name, step_metric=None):
        self.calls.append(("define_metric", name, step_metric))


def test_series_go_to_their_own_jsonl_and_wandb_axis(tmp_path):
    tracker = Tracker(tmp_path, fresh=True)
    tracker.run = run = _FakeRun()
    tracker.log_series("kmeans", {"level": 1, "objective": np.float64(3.5)})
    tracker.log_series("kmeans", {"level": 1, "objective": 3.0})
    tracker.log({"level": 1, "inertia": 3.0}, step=1)
    lines = [json.loads(x) for x in (tmp_path / "kmeans.jsonl").read_text().splitlines()]
    assert lines == [{"index": 0, "level": 1, "objective": 3.5}, {"index": 1, "level": 1, "objective": 3.0}]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    assert run.calls == [
        ("define_metric", "kmeans/index", None),
        ("define_metric", "kmeans/*", "kmeans/index"),
        ("log", {"kmeans/index": 0, "kmeans/level": 1, "kmeans/objective": 3.5}, None),
        ("log", {"kmeans/index": 1, "kmeans/level": 1, "kmeans/objective": 3.0}, None),
        # no explicit wandb step: it would have to exceed the series' calls; "step" is a metric
        ("log", {"step": 1, "level": 1, "inertia": 3.0}, None),
    ]
    # a fresh tracker starts the series over
    Tracker(tmp_path, fresh=True).log_series("kmeans", {"level": 2})
    assert (tmp_path / "kmeans.jsonl").read_text().splitlines() == ['{"index": 0, "level": 2}']


def test_offline_runs_are_grouped_and_a_restarted_job_resumes_its_run_id(tmp_path, monkeypatch):
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "exp" / "train"
    first = Tracker(out, mode="offline", name="train/exp", group="exp", job_type="train", config={"lr": 0.1})
    assert (first.run.group, first.run.job_type, first.run.id) == ("exp", "train", first.run_id)
    first.log({"loss": 2.0}, step=10)
    first.close()
    # a requeued job: same folder, same experiment and stage -> the same wandb run, resumed; the JSONL
    # keeps what the killed attempt logged up to its checkpoint
    second = Tracker(out, mode="offline", group="exp", job_type="train", resume_step=10)
    assert second.run.id == first.run_id and second.run_id == first.run_id
    second.log({"loss": 1.5}, step=20)
    second.close()
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [10, 20]
    runs = list((out / "wandb").glob("offline-run-*"))
    assert runs and all(first.run_id in run.name for run in runs)  # both attempts: one wandb run id
    # another stage of the experiment, or the same stage elsewhere, is another run
    assert Tracker(out, group="exp", job_type="eval").run_id != first.run_id
    assert Tracker(tmp_path / "other", group="exp", job_type="train").run_id != first.run_id
    del wandb


def test_wandb_mode_offline_in_the_environment_keeps_an_online_config_off_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    calls = []

    class Stub:
        Settings = staticmethod(lambda **kw: kw)

        @staticmethod
        def setup(settings):
            calls.append(("setup", settings["mode"]))

        @staticmethod
        def init(**kw):
            calls.append(kw["mode"])
            return None

    monkeypatch.setitem(sys.modules, "wandb", Stub)
    tracker = Tracker(tmp_path, mode="online", group="exp", job_type="sample")
    assert tracker.mode == "offline" and calls == [("setup", "offline"), "offline"]


def test_resume_step_drops_records_logged_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 2, "a": 1}\n{"step": 4, "a": 2}\n{"step": 6, "a": 3}\n{"step": 8, "a"')  # cut by a kill
    Tracker(tmp_path, resume_step=4).log({"a": 9}, step=6)
    assert [json.loads(x)["a"] for x in path.read_text().splitlines()] == [1, 2, 9]
