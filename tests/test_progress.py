"""The throttled progress reporter: its lines, ETA, throttling and silence off rank 0."""

from __future__ import annotations

import logging

import numpy as np

from curate.core.progress import Progress, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "curate.core.progress"]


def test_format_duration():
    assert format_duration(0) == "00:00"
    assert format_duration(75.4) == "01:15"
    assert format_duration(3599) == "59:59"
    assert format_duration(3600 + 62) == "1:01:02"


def test_lines_and_eta_with_a_fake_clock(caplog):
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    p = Progress(10, "work", every_s=0, enabled=True, clock=clock)
    for _ in range(4):
        clock.now += 3.0  # 3 s a step: after 4 steps, 6 steps left = 18 s
        p.update()
    clock.now += 3.0
    p.update(6, note=lambda: "note")
    lines = _lines(caplog)
    assert lines[0] == "work: 1/10 (10%), ETA 00:27"
    assert lines[3] == "work: 4/10 (40%), ETA 00:18"
    assert lines[4] == "work: 10/10 (100%), took 00:15, note"


def test_resumed_loop_counts_its_own_rate(caplog):
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    p = Progress(100, "iter", every_s=0, done=50, enabled=True, clock=clock)
    clock.now = 10.0
    p.update(10)  # 10 steps in 10 s, 40 left
    assert _lines(caplog) == ["iter: 60/100 (60%), ETA 00:40"]


def test_throttling_limits_lines_and_skips_the_note(caplog):
    caplog.set_level(logging.INFO)
    clock, calls = FakeClock(), []
    p = Progress(1000, "step", every_s=10, enabled=True, clock=clock)
    for _ in range(1000):
        clock.now += 0.1  # 100 s in all: one line every 10 s at most
        p.update(1, note=lambda: calls.append(1) or "n")
    lines = _lines(caplog)
    assert 9 <= len(lines) <= 10
    assert len(calls) == len(lines)  # the note is built only for logged lines
    assert p.done == 1000


def test_other_ranks_print_nothing(caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr("curate.core.dist.is_main_process", lambda: False)
    p = Progress(5, "quiet", every_s=0)
    for _ in range(5):
        p.update()
    assert _lines(caplog) == [] and p.done == 5


def test_kmeans_logs_kmeanspp_and_lloyd_progress(caplog, monkeypatch):
    from curate.kmeans import KMeans

    caplog.set_level(logging.INFO)
    monkeypatch.setattr("curate.core.progress.EVERY_S", 0.0)
    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    KMeans(5, n_iter=3, tol=-1.0, progress_every_s=0).fit(x)
    heads = [line.split(" (")[0] for line in _lines(caplog)]
    assert heads == [f"k-means++ k=5: centroid: {j}/5" for j in range(2, 6)] + [
        f"k-means k=5: Lloyd iteration: {i}/3" for i in range(1, 4)
    ]


def test_dedup_reports_rows_and_removals(caplog, monkeypatch):
    from curate.dedup import deduplicate

    caplog.set_level(logging.INFO)
    monkeypatch.setattr("curate.core.progress.EVERY_S", 0.0)
    x = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    x[20:30] = x[:10]  # 10 exact duplicates
    result = deduplicate(x, threshold=0.99, chunk_size=10)
    lines = _lines(caplog)
    assert [line.split(" (")[0] for line in lines] == [f"dedup: row: {i}/40" for i in (10, 20, 30, 40)]
    removed = len(x) - len(result.kept_indices)
    assert removed == 10 and lines[-1].endswith(f"{removed} removed so far")


def test_levels_say_when_each_step_starts(caplog):
    from curate.hierarchy.model import HierarchicalKMeans

    caplog.set_level(logging.INFO)
    x = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    levels = [dict(k=20, resample_steps=2, sample_size=5), dict(k=4)]
    HierarchicalKMeans(levels, n_iter=3).fit(x)
    messages = [r.getMessage() for r in caplog.records if r.name == "curate.hierarchy.model"]
    starts = [m for m in messages if "k-means with" in m or "resampling step" in m]
    assert starts == [
        "level 1 of 2: k-means with k=20 on 300 rows",
        "level 1: resampling step 1 of 2",
        "level 1: resampling step 2 of 2",
        "level 2 of 2: k-means with k=4 on 20 rows",
    ]


def test_split_reports_its_lloyd_passes(caplog, monkeypatch):
    from curate.hierarchy.model import HierarchicalKMeans

    caplog.set_level(logging.INFO)
    monkeypatch.setattr("curate.core.progress.EVERY_S", 0.0)
    x = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    HierarchicalKMeans([dict(k=5, n_splits=3)], n_iter=3).fit(x)
    split = [line.split(" (")[0] for line in _lines(caplog) if line.startswith("split")]
    assert split == [f"split of 5 clusters into 3: Lloyd pass: {i}/4" for i in range(1, 5)]
    assert any(r.getMessage() == "level 1: splitting each of 5 clusters into 3" for r in caplog.records)
