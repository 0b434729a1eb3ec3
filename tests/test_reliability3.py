"""Reliability, round three (issue 23): refusals that passed, one device check, clear errors, no
network in wandb's offline mode; every case through the real entry point of a stage.

The cases share one Python process (each runs ``curate.<stage>``'s ``__main__`` with its own
``sys.argv``, as ``python -m`` does) so the imports are paid once; the process refuses every
network socket and name look-up, and prints ``NETWORK`` when one is tried.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curate.core.atomic import atomic_save_npy
from curate.io.identity import content_hash, fixed_rows

REPO = Path(__file__).resolve().parents[1]
DRIVER = r"""
import contextlib, io, json, runpy, socket, sys
cases_path, out_path = sys.argv[1:3]
def refuse(*args, **kwargs):
    sys.__stderr__.write(f"NETWORK {args}\n")
    raise OSError("network refused by the test")
_connect = socket.socket.connect
def connect(self, addr):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        refuse(addr)
    return _connect(self, addr)
socket.socket.connect, socket.getaddrinfo = connect, refuse
results = []
for module, *args in json.load(open(cases_path)):
    err, rc = io.StringIO(), 0
    sys.argv = [module, *args]
    with contextlib.redirect_stderr(err):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as stop:
            rc = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    results.append({"rc": rc, "stderr": err.getvalue()})
json.dump(results, open(out_path, "w"))
"""


def _run_cases(tmp_path: Path, cases: list[list[str]]) -> list[dict]:
    (tmp_path / "driver.py").write_text(DRIVER)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}  # the config's mode decides
    env.update(HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "cases.json"), str(tmp_path / "res.json")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NETWORK" not in proc.stderr, proc.stderr[-3000:]
    return json.loads((tmp_path / "res.json").read_text())


def _one_error_line(result: dict, *expected: str) -> str:
    assert result["rc"] == 2, result["stderr"][-2000:]
    assert "Traceback" not in result["stderr"], result["stderr"][-2000:]
    lines = [line for line in result["stderr"].splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result["stderr"][-2000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_refusals_devices_errors_and_no_network(tmp_path):
    x = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    atomic_save_npy(tmp_path / "x.npy", x)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.npy").write_bytes(np.random.default_rng(1).bytes(1000))
    out = tmp_path / "out"
    base = ["input.toy=null", "cluster=kmeans_flat", "cluster.n_iter=3", "cluster.levels=[{k:20},{k:5}]"]
    ok = [*base, f"input.path={tmp_path / 'x.npy'}", f"out_dir={out}"]
    refused = {
        "+newkey=1": ("newkey is not a setting",),
        "memory_budget_mb=-5": ("memory_budget_mb must be > 0",),
        "hydra/launcher=submitit_slurm": ("hydra/launcher=submitit_slurm", "launcher=submitit_slurm"),
        "device=cuda": ("device='cuda'",),
        "device=cuda:7": ("device='cuda:7'",),
        "seed=-1": ("seed must be >= 0",),
    }
    cases = [["curate.cluster", *ok, f"name=r{i}", arg] for i, arg in enumerate(refused)]
    cases.append(["curate.cluster", *ok, "name=sweep", "-m", "seed=0,abc"])  # a flag after the overrides
    cases.append(["curate.cluster", *base, f"input.path={tmp_path / 'bad' / 'x.npy'}", f"out_dir={out}", "name=bad"])
    cases.append(["curate.cluster", *ok, "name=wb", "logger.wandb.mode=offline"])  # no socket (the driver)
    results = _run_cases(tmp_path, cases)
    no_cuda = not __import__("torch").cuda.is_available()
    for (arg, expected), result in zip(refused.items(), results, strict=False):
        if arg.startswith("device=") and not no_cuda:
            continue
        _one_error_line(result, *expected)
    for i in range(len(refused)):  # refused before any work: no clustering, no checkpoint
        folder = out / "cluster" / f"r{i}"
        assert not (folder / "manifest.json").exists() and not (folder / "checkpoints").exists()
    _one_error_line(results[len(refused)], "seed")
    assert not (out / "multirun" / "cluster" / "sweep" / "seed=0").exists()
    _one_error_line(results[len(refused) + 1], "not a .npy file", str(tmp_path / "bad" / "x.npy"))
    assert results[-1]["rc"] == 0, results[-1]["stderr"][-2000:]
    assert (out / "cluster" / "wb" / "manifest.json").exists() and (out / "cluster" / "wb" / "wandb").is_dir()


def _pool(tmp_path: Path, n: int = 300) -> tuple[Path, list[str]]:
    """A ``(n, 4)`` input and the cluster case that clusters it into ``<out>/cluster/c``."""
    x = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    atomic_save_npy(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    case = [
        "curate.cluster",
        "input.toy=null",
        "cluster=kmeans_flat",
        "cluster.n_iter=3",
        "cluster.levels=[{k:20},{k:5}]",
        f"input.path={tmp_path / 'x.npy'}",
        f"out_dir={out}",
        "name=c",
    ]
    return out, case


def test_a_budget_that_selects_no_item_is_refused_naming_the_smallest_fraction(tmp_path):
    out, cluster = _pool(tmp_path)
    sample = ["curate.sample", f"cluster_dir={out / 'cluster' / 'c'}", f"out_dir={out}", "plot=false"]
    results = _run_cases(
        tmp_path,
        [
            cluster,
            [*sample, "name=zero", "targets=[0.0001]"],
            [*sample, "name=two", "targets=[50,0.0001]"],
            [*sample, "name=least", "targets=[0.00167]"],
        ],
    )
    assert results[0]["rc"] == 0, results[0]["stderr"][-2000:]
    _one_error_line(results[1], "targets", "0.0001", "0.00167")
    _one_error_line(results[2], "targets", "0.0001", "0.00167")  # refused before the first budget is drawn
    for name in ("zero", "two"):
        assert not list((out / "sample" / name).rglob("indices.npy"))
    assert results[3]["rc"] == 0, results[3]["stderr"][-2000:]
    assert len(np.load(out / "sample" / "least" / "indices.npy")) == 1  # the fraction named selects an item


def test_a_clustering_is_not_reused_when_rows_changed_but_size_and_mtime_did_not(tmp_path):
    out, cluster = _pool(tmp_path)
    first = _run_cases(tmp_path, [cluster, cluster])
    assert all(r["rc"] == 0 for r in first), first[0]["stderr"][-2000:]
    assert "nothing to do" in first[1]["stderr"]  # the same rows: reused
    path = tmp_path / "x.npy"
    stat = path.stat()
    x = np.load(path)
    others = np.setdiff1d(np.arange(len(x)), fixed_rows(len(x)))  # rows the cheap identity does not read
    rows = np.random.default_rng(1).choice(others, size=len(x) * 12 // 100, replace=False)
    x[rows] = np.random.default_rng(2).normal(size=(len(rows), x.shape[1]))
    with open(path, "r+b") as f:  # the same file, size and header; 12% of its rows replaced
        f.seek(stat.st_size - x.nbytes)
        f.write(x.tobytes())
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    fresh = [*cluster[:-1], "name=fresh"]
    again = _run_cases(tmp_path, [cluster, [*cluster, "overwrite=true"], fresh])
    _one_error_line(again[0], "rows changed since", "content hash", "overwrite=true")
    assert all(r["rc"] == 0 for r in again[1:]), again[1]["stderr"][-2000:]
    # the hash recorded while the fit streamed the rows is the one-pass hash of the file as it is now
    manifest = json.loads((out / "cluster" / "c" / "manifest.json").read_text())
    assert manifest["input"]["content"] == content_hash(np.load(path, allow_pickle=False))
    for t in (1, 2):  # recomputed on the new rows: the arrays of a fresh run
        for name in ("assign", "centroids"):
            a = np.load(out / "cluster" / "c" / f"level{t}" / f"{name}.npy")
            np.testing.assert_array_equal(a, np.load(out / "cluster" / "fresh" / f"level{t}" / f"{name}.npy"))


def test_a_sample_folder_holds_exactly_the_outputs_of_its_last_run(tmp_path):
    out, cluster = _pool(tmp_path)
    one = ["curate.sample", f"cluster_dir={out / 'cluster' / 'c'}", f"out_dir={out}", "name=one", "plot=false"]
    two = [*one[:-2], "name=two", "plot=false"]
    first = _run_cases(tmp_path, [cluster, [*one, "targets=[100]"], [*two, "targets=[20,40]"]])
    assert all(r["rc"] == 0 for r in first), [r["stderr"][-1500:] for r in first]
    (out / "sample" / "one" / "notes.txt").write_text("mine")  # a user's files: never removed
    (out / "sample" / "two" / "target_20" / "notes.txt").write_text("mine")
    then = _run_cases(tmp_path, [[*one, "targets=[20,40]"], [*two, "targets=[100]"]])
    assert all(r["rc"] == 0 for r in then), [r["stderr"][-1500:] for r in then]
    one_dir, two_dir = out / "sample" / "one", out / "sample" / "two"
    for name in ("indices.npy", "selected.parquet", "stats.json", "metrics.json"):
        assert not (one_dir / name).exists(), name  # the single budget's root outputs are gone
        assert (two_dir / name).exists(), name
    assert (one_dir / "notes.txt").read_text() == "mine"
    summary = json.loads((one_dir / "summary.json").read_text())
    assert [s["target"] for s in summary] == [20, 40]
    assert len(np.load(one_dir / "target_40" / "indices.npy")) == 40
    assert not (two_dir / "summary.json").exists()  # it named the old budgets
    assert not (two_dir / "target_40").exists()  # the old budget folders
    assert sorted(p.name for p in (two_dir / "target_20").iterdir()) == ["notes.txt"]
    assert len(np.load(two_dir / "indices.npy")) == 100


KILL_DRIVER = r"""
import contextlib, io, json, os, runpy, signal, sys
from pathlib import Path
import numpy as np
import pytest
from curate.core.atomic import listen_writes
root, every, args = Path(sys.argv[1]), sys.argv[2] == "every", json.loads(sys.argv[3])
def run(out, kill_at=None):
    writes = []
    def hook(path):  # called before each file is written: kill_at is the number of files written
        if len(writes) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        writes.append(str(Path(path).relative_to(out)))
    sys.argv = ["curate.cluster", *args, f"out_dir={out}", "name=c"]
    with contextlib.redirect_stderr(io.StringIO()) as err, listen_writes(hook):
        try:
            runpy.run_module("curate.cluster", run_name="__main__", alter_sys=True)
        except SystemExit as stop:
            assert not stop.code, err.getvalue()[-3000:]
    return writes
def arrays(out):
    return {str(p.relative_to(out)): np.load(p) for p in sorted(out.rglob("*.npy"))}
writes = run(root / "ref")
ref = arrays(root / "ref")
if every:
    points = list(range(len(writes)))
else:  # spread over the fit: the toy, k-means iterations, resampling steps, level checkpoints, outputs
    marks = [("toy_2d/labels.npy", 0), ("level1/run0/kmeans_state.npz", 1), ("level1/step1.npz", 0),
             ("level2/run0/", 0), ("cluster/c/level1/assign.npy", 0), ("cluster/c/manifest.json", 0)]
    points = [[i for i, w in enumerate(writes) if m in w][k] for m, k in marks]
results = []
for n in points:
    out = root / f"p{n}"
    pid = os.fork()
    if pid == 0:
        try:
            run(out, kill_at=n)
        finally:
            os._exit(3)  # not killed
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    run(out)  # the re-run
    got = arrays(out)
    same = {k for k in set(ref) & set(got) if np.array_equal(ref[k], got[k])}
    differ = sorted((set(ref) | set(got)) - same)
    results.append({"point": n, "write": writes[n], "killed": killed, "differ": differ})
print(json.dumps(results))
"""


def _kill_points(tmp_path: Path, every: bool) -> list[dict]:
    (tmp_path / "kill.py").write_text(KILL_DRIVER)
    args = ["cluster=kmeans_flat", "cluster.n_iter=4", "checkpoint_every=2",
            "cluster.levels=[{k:20,resample_steps:1,sample_size:2},{k:4}]"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "kill.py"), str(tmp_path), "every" if every else "some", json.dumps(args)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for r in results:
        assert r["killed"], r
        assert not r["differ"], r  # the arrays of the uninterrupted run, the toy's included
    return results


def test_sigkill_at_points_across_a_fit_then_a_rerun_gives_the_arrays_of_an_uninterrupted_run(tmp_path):
    """Killed (SIGKILL, before the n-th file of the run is written) inside a k-means run, a
    resampling step, the next level, the final arrays and before the manifest, then run again:
    the arrays of a run never killed. The toy input killed between its ``x.npy`` and its manifest
    was the case that ended differently (no ``labels.npy``; the toy is now judged by its manifest)."""
    results = _kill_points(tmp_path, every=False)
    assert len(results) == 6 and len({r["point"] for r in results}) == 6


@pytest.mark.long
def test_sigkill_before_every_file_a_fit_writes(tmp_path):
    assert len(_kill_points(tmp_path, every=True)) > 40
