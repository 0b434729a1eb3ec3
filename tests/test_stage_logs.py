"""Each stage's Hydra job log (``<run dir>/<job name>.log``) holds what its console showed."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from curate.core import dist

# a log record as the stages format it ("[time r0] LEVEL name: message") or as Hydra does ("[time][name][LEVEL] - ")
RECORD = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}[\] ]")


def console_records(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if RECORD.match(line)]


def assert_log_holds_console(proc, log_file: Path, expected: str) -> None:
    shown = console_records(proc)
    assert any(expected in line for line in shown), f"{expected!r} not on the console:\n{proc.stderr[-2000:]}"
    written = log_file.read_text().splitlines()
    missing = [line for line in shown if line not in written]
    assert not missing, f"{log_file} lacks {len(missing)} of the {len(shown)} console lines, e.g. {missing[:2]}"


@pytest.mark.slow
def test_cluster_and_sample_logs(tmp_path, cli, blobs):
    np.save(tmp_path / "x.npy", blobs)
    common = [f"out_dir={tmp_path}", "name=lg"]
    proc = cli("-m", "curate.cluster", f"input.path={tmp_path / 'x.npy'}", "cluster.levels=[{k:30},{k:5}]", *common)
    assert_log_holds_console(proc, tmp_path / "cluster" / "lg" / "cluster.log", "level 2: 5 clusters")
    proc = cli("-m", "curate.sample", "targets=[100]", "plot=false", *common)
    assert_log_holds_console(proc, tmp_path / "sample" / "lg" / "sample.log", "budget 100")


@pytest.mark.slow
def test_dedup_log(tmp_path, cli):
    x = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", np.concatenate([x, 3 * x[:20]]))  # 20 scaled copies at the end
    proc = cli("-m", "curate.dedup", f"input={tmp_path / 'x.npy'}", f"out={tmp_path / 'dd'}", "device=cpu")
    assert_log_holds_console(proc, tmp_path / "dd" / "dedup.log", "kept 200 of 220 rows")


@pytest.mark.slow
def test_embed_log(tmp_path, cli):
    (tmp_path / "texts.txt").write_text("".join(f"text number {i}\n" for i in range(30)))
    args = [f"data.path={tmp_path / 'texts.txt'}", f"out={tmp_path / 'emb'}", "num_workers=0", "progress=false"]
    proc = cli("-m", "curate.embed", "data=text_lines", "encoder=random_projection", *args)
    assert_log_holds_console(proc, tmp_path / "emb" / "embed.log", "30")


def test_setup_logging_keeps_file_handlers_and_formats_them_like_the_console(tmp_path):
    """In process: a file handler on the root logger (as Hydra installs one) survives setup_logging,
    calling it twice leaves one console, and both write the same line."""
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    file_handler = logging.FileHandler(tmp_path / "job.log")
    root.addHandler(file_handler)
    root.addHandler(logging.StreamHandler())  # a console that setup_logging replaces
    try:
        dist.setup_logging()
        dist.setup_logging()
        consoles = [h for h in root.handlers if type(h) is logging.StreamHandler]
        assert file_handler in root.handlers and len(consoles) == 1
        logging.getLogger("curate.test").info("hello %d", 7)
        file_handler.flush()
        line = (tmp_path / "job.log").read_text().strip()
        assert line.endswith("INFO curate.test: hello 7") and " r0] " in line
        record = logging.LogRecord("curate.test", logging.INFO, __file__, 1, "hello %d", (7,), None)
        assert consoles[0].format(record).endswith(line[line.index(" r0] ") :])
    finally:
        for handler in list(root.handlers):
            if handler not in before[0]:
                root.removeHandler(handler)
        for handler in before[0]:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(before[1])
        file_handler.close()


@pytest.mark.slow
def test_train_log(tmp_path, cli):
    tiny = ["model.depth=1", "model.embed_dim=32", "model.num_heads=2", "crops.local_number=0", "ibot.loss_weight=0"]
    heads = ["dino.head.n_prototypes=16", "dino.head.hidden_dim=16", "dino.head.bottleneck_dim=8"]
    args = [f"out={tmp_path / 'run'}", *tiny, *heads, "train.batch_size=8", "train.iterations=2", "train.log_every=1"]
    proc = cli("-m", "selfsup.train", *args)
    assert_log_holds_console(proc, tmp_path / "run" / "selfsup_train.log", "it 2/2")
