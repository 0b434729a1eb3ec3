"""A hostile pass over the stage commands: tiny and broken inputs, bad settings, re-runs after a
change, each case through the real CLI in its own process and classified automatically.

    python scripts/hostile_pass.py                      # every case, 2 at a time; report in hostile/
    python scripts/hostile_pass.py --only dedup --jobs 1 --work /tmp/hp --json hostile.json

Every case says what a user should get: ``ok`` (exit 0, and its check of the outputs holds),
``refuse`` (exit non-zero with exactly one ``error:`` line, naming what the case says it must
name) or ``either`` (a re-run after a change may redo the work or refuse and say why). A case
may be several steps (commands, or changes to its files between them): the steps before the last
must succeed. Outcomes:

- ``pass``;
- ``silent-wrong``: a refusal expected and the command exited 0, or the outputs are wrong;
- ``wrong-refusal``: an ``ok`` case refused;
- ``traceback``: a Python traceback on stderr (in any step);
- ``unclear``: a refusal without exactly one ``error:`` line, or one not naming the key or file;
- ``hang``: a step ran past ``--timeout`` seconds;
- ``broken-case``: an earlier step failed (the case itself is wrong).

Exit status 1 when any case is not ``pass``. Nothing here imports the library: it drives
``python -m curate.<stage>`` as a user does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
Step = list[str] | Callable[[Path, Path], None]  # a command (argv after `python`) or a change (data, case dir)
Check = Callable[[Path, Path], str | None]  # (data, case dir) -> what is wrong, or None


@dataclass
class Case:
    """One hostile case: its steps, what the user should get, and how to check it."""

    name: str
    steps: list[Step]
    expect: str  # "ok" | "refuse" | "either" (ok and its check holds, or a refusal naming `names`)
    names: tuple[str, ...] = ()  # a refusal's error line must contain each
    check: Check | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)


# -- the data every case reads (written once, never changed by a case) ----------------------------
def make_data(data: Path) -> None:
    """Tiny inputs, good and broken, plus a finished clustering and an embedding store."""
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    centres = 4.0 * rng.normal(size=(4, 8))
    x = (centres[rng.integers(0, 4, 300)] + rng.normal(size=(300, 8))).astype(np.float32)
    np.save(data / "x.npy", x)
    np.save(data / "rows5.npy", x[:5])
    np.save(data / "empty.npy", np.zeros((0, 8), np.float32))
    np.save(data / "nan.npy", np.where(np.arange(300)[:, None] == 7, np.nan, x).astype(np.float32))
    np.save(data / "inf.npy", np.where(np.arange(300)[:, None] == 9, np.inf, x).astype(np.float32))
    np.save(data / "int.npy", rng.integers(0, 10, (300, 8)))
    np.save(data / "f16.npy", x.astype(np.float16))
    np.save(data / "f64.npy", x.astype(np.float64))
    np.save(data / "vec.npy", x[:, 0].copy())
    np.save(data / "cube.npy", x.reshape(300, 2, 4))
    np.save(data / "obj.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    np.save(data / "zeros.npy", np.zeros((300, 8), np.float32))
    np.save(data / "same.npy", np.ones((300, 8), np.float32))
    np.save(data / "wide.npy", rng.normal(size=(40, 8)).astype(np.float32))
    np.save(data / "d4.npy", rng.normal(size=(50, 4)).astype(np.float32))
    dup = np.repeat(x[:100], 2, axis=0)
    np.save(data / "dup.npy", dup)
    (data / "junk.npy").write_bytes(rng.bytes(1000))
    (data / "text.npy").write_text("not an array\n")
    (data / "truncated.npy").write_bytes((data / "x.npy").read_bytes()[:500])
    (data / "folder").mkdir(exist_ok=True)
    np.save(data / "u8.npy", rng.integers(0, 255, (40, 8, 8)).astype(np.uint8))
    (data / "texts.txt").write_text("".join(f"line {i} {'word ' * (i % 5)}\n" for i in range(30)))
    (data / "empty.txt").write_text("")
    (data / "texts.jsonl").write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(20)))
    (data / "bad.jsonl").write_text('{"text": "a"}\n{not json\n')
    images = data / "images"
    images.mkdir(exist_ok=True)
    from PIL import Image

    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3)).astype(np.uint8)).save(images / f"im{i:02d}.png")
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    run([*CLUSTER, f"input.path={data / 'x.npy'}", f"out_dir={data / 'o'}", "name=c"], data, 300)
    run(
        ["-m", "curate.embed", "data=npy", f"data.path={data / 'u8.npy'}", "encoder=pixels", f"out={data / 's'}"],
        data,
        300,
    )


def run(argv: list[str], cwd: Path, timeout: float) -> dict[str, Any]:
    """``python <argv>`` in ``cwd``; ``{rc, stderr, seconds}`` (``rc`` None on a timeout)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as stop:
        err = stop.stderr.decode() if isinstance(stop.stderr, bytes) else (stop.stderr or "")
        return {"rc": None, "stderr": err, "seconds": time.perf_counter() - started}
    return {"rc": proc.returncode, "stderr": proc.stderr, "seconds": time.perf_counter() - started}


# -- the cases ------------------------------------------------------------------------------------
CLUSTER = ["-m", "curate.cluster", "input.toy=null", "cluster=kmeans_flat", "cluster.n_iter=3"]
CLUSTER += ["cluster.levels=[{k:8},{k:3}]"]


def cluster(*args: str, path: str = "{data}/x.npy") -> list[str]:
    return [*CLUSTER, f"input.path={path}", "out_dir={out}", "name=c", *args]


def sample(*args: str) -> list[str]:
    return ["-m", "curate.sample", "cluster_dir={data}/o/cluster/c", "out_dir={out}", "name=c", "plot=false", *args]


def dedup(*args: str, input: str = "{data}/x.npy") -> list[str]:
    return ["-m", "curate.dedup", f"input={input}", "out={out}/d", *args]


def embed(*args: str) -> list[str]:
    return ["-m", "curate.embed", "encoder=pixels", "out={out}/s", *args]


def retrieve(*args: str) -> list[str]:
    return ["-m", "curate.retrieve", "input={data}/x.npy", "queries={data}/rows5.npy", "out={out}/r", *args]


def rows_of(path: str, n: int | None = None, unique: bool = True, below: int = 300) -> Check:
    """The ``.npy`` at ``path`` (under the case folder) holds ``n`` (unique) row indices < ``below``."""

    def check(data: Path, out: Path) -> str | None:
        file = out / path
        if not file.is_file():
            return f"{path} not written"
        idx = np.load(file, allow_pickle=False)
        if n is not None and len(idx) != n:
            return f"{path}: {len(idx)} rows, expected {n}"
        if unique and len(np.unique(idx)) != len(idx):
            return f"{path}: repeated indices"
        if len(idx) and (idx.min() < 0 or idx.max() >= below):
            return f"{path}: an index outside [0, {below})"
        return None

    return check


def json_field(path: str, key: str, predicate: Callable[[Any], bool], what: str) -> Check:
    def check(data: Path, out: Path) -> str | None:
        file = out / path
        if not file.is_file():
            return f"{path} not written"
        value = json.loads(file.read_text())
        for part in key.split("."):  # dict keys, and list positions as digits
            if isinstance(value, list) and part.isdigit():
                value = value[int(part)] if int(part) < len(value) else None
            else:
                value = value.get(part) if isinstance(value, dict) else None
        return None if predicate(value) else f"{path}: {key}={value!r}, expected {what}"

    return check


def all_of(*checks: Check) -> Check:
    def check(data: Path, out: Path) -> str | None:
        return next((problem for c in checks if (problem := c(data, out))), None)

    return check


def absent(*paths: str) -> Check:
    def check(data: Path, out: Path) -> str | None:
        left = [p for p in paths if (out / p).exists()]
        return f"stale outputs left: {left}" if left else None

    return check


def copy_input(name: str, to: str = "in.npy") -> Step:
    def step(data: Path, out: Path) -> None:
        shutil.copy2(data / name, out / to)

    return step


def replace_rows_keep_stat(to: str = "in.npy", share: float = 0.12, rows: list[int] | None = None) -> Step:
    """Replace ``share`` of the rows of ``to`` (or the given ``rows``) with other values, keeping
    its size and mtime."""

    def step(data: Path, out: Path) -> None:
        path = out / to
        stat = path.stat()
        x = np.load(path, allow_pickle=False)
        picked = np.random.default_rng(5).choice(len(x), int(share * len(x)), replace=False) if rows is None else rows
        x[picked] = -x[picked] + 3.0
        np.save(path, x)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    return step


def same_as_fresh(folder: str, fresh_argv: list[str], arrays: tuple[str, ...]) -> Check:
    """The arrays in ``folder`` equal those of a fresh run of ``fresh_argv`` (into ``<out>/fresh``)."""

    def check(data: Path, out: Path) -> str | None:
        argv = [fill(a, data, out / "fresh") for a in fresh_argv]
        (out / "fresh").mkdir(exist_ok=True)
        result = run(argv, out / "fresh", 300)
        if result["rc"] != 0:
            return "the fresh reference run failed: " + result["stderr"][-300:]
        for name in arrays:
            a, b = out / folder / name, out / "fresh" / folder / name
            if not a.is_file() or not np.array_equal(np.load(a, allow_pickle=False), np.load(b, allow_pickle=False)):
                return f"{folder}/{name} differs from a fresh run on the current input"
        return None

    return check


def cases() -> list[Case]:
    """Every case of the pass."""
    out: list[Case] = []
    add = out.append
    ok_cluster = rows_of("cluster/c/level1/assign.npy", 300, unique=False, below=8)

    # cluster: inputs
    add(Case("cluster/ok", [cluster()], "ok", check=ok_cluster))
    for name, names in [
        ("missing.npy", ("missing.npy",)),
        ("junk.npy", ("junk.npy", "not a .npy")),
        ("text.npy", ("text.npy",)),
        ("truncated.npy", ("truncated.npy",)),
        ("obj.npy", ("obj.npy",)),
        ("empty.npy", ("empty.npy",)),
        ("vec.npy", ("vec.npy",)),
        ("cube.npy", ("cube.npy",)),
        ("nan.npy", ("nan.npy",)),
        ("inf.npy", ("inf.npy",)),
        ("rows5.npy", ("k=8",)),
        ("folder", ("folder",)),
        ("int.npy", ("int.npy",)),
    ]:
        add(Case(f"cluster/input-{name}", [cluster(path=f"{{data}}/{name}")], "refuse", names))
    for name in ("f16.npy", "f64.npy"):
        add(Case(f"cluster/input-{name}", [cluster(path=f"{{data}}/{name}")], "ok", check=ok_cluster))
    add(Case("cluster/identical-rows", [cluster(path="{data}/same.npy")], "refuse", ("k=8",)))
    add(Case("cluster/subset-missing", [cluster("input.subset={data}/nothing")], "refuse", ("nothing",)))
    # cluster: settings
    for setting, names in [
        ("cluster.levels=[{k:0}]", ("k",)),
        ("cluster.levels=[{k:-3}]", ("k",)),
        ("cluster.levels=[{k:abc}]", ("k",)),
        ("cluster.levels=[{k:400}]", ("k=400",)),
        ("cluster.levels=[{k:1.5}]", ("k",)),
        ("cluster.levels=[{k:8,resample_steps:-1}]", ("resample_steps",)),
        ("cluster.levels=[{k:8,resample_steps:2,sample_size:0}]", ("sample_size",)),
        ("cluster.levels=[{k:8,n_splits:0}]", ("n_splits",)),
        ("cluster.levels=[{k:8,fit_fraction:0}]", ("fit_fraction",)),
        ("cluster.levels=[{k:8,fit_fraction:2}]", ("fit_fraction",)),
        ("cluster.levels=[{k:8,fit_max_points:0}]", ("fit_max_points",)),
        ("cluster.levels=[{k:8,sizes:3}]", ("sizes",)),
        ("cluster.levels=[]", ("levels",)),
        ("cluster.levels=[{k:3},{k:8}]", ("k",)),
        ("cluster.n_iter=-1", ("n_iter",)),
        ("cluster.n_iter=1.5", ("n_iter",)),
        ("cluster.distance=cosinee", ("cluster.distance",)),
        ("cluster.init=kmeans++", ("cluster.init",)),
        ("cluster.resample_strategy=far", ("resample_strategy",)),
        ("seed=-1", ("seed",)),
        ("seed=abc", ("seed",)),
        ("device=cuda:7", ("cuda",)),
        ("device=tpu", ("device",)),
        ("memory_budget_mb=-5", ("memory_budget_mb",)),
        ("memory_budget_mb=0", ("memory_budget_mb",)),
        ("checkpoint_every=0", ("checkpoint_every",)),
        ("shard_min_rows=0", ("shard_min_rows",)),
        ("split_memory_mb=-1", ("split_memory_mb",)),
        ("stop_after_level=5", ("stop_after_level",)),
        ("stop_after_level=0", ("stop_after_level",)),
        ("+newkey=1", ("newkey",)),
        ("newkey=1", ("newkey",)),
        ("cluster.newkey=1", ("newkey",)),
        ("hydra/launcher=submitit_slurm", ("launcher",)),
        ("cluster=nonexistent", ("nonexistent",)),
    ]:
        add(Case(f"cluster/{setting}", [cluster(setting)], "refuse", names))
    if not _has_cuda():
        add(Case("cluster/device=cuda", [cluster("device=cuda")], "refuse", ("cuda",)))
    add(Case("cluster/multirun-bad-seed", [[*cluster(), "-m", "seed=0,abc"]], "refuse", ("seed",)))
    for setting in ("cluster.levels=[{k:0.1},{k:auto,resample_steps:1,sample_size:2}]", "cluster.distance=cosine"):
        add(
            Case(
                f"cluster/{setting}", [cluster(setting)], "ok", check=rows_of("cluster/c/level1/assign.npy", 300, False)
            )
        )
    add(
        Case(
            "cluster/stop_after_level=1-then-all",
            [cluster("stop_after_level=1"), cluster()],
            "ok",
            check=all_of(ok_cluster, same_as_fresh("cluster/c", cluster(), ("level1/assign.npy", "level2/assign.npy"))),
        )
    )
    add(
        Case(
            "cluster/fraction-k-recorded",
            [cluster("cluster.levels=[{k:0.1},{k:0.5}]")],
            "ok",
            check=all_of(
                json_field("cluster/c/manifest.json", "levels.0.spec.k", lambda v: v == 30, "k=30 (0.1 of 300)"),
                json_field("cluster/c/manifest.json", "levels.1.spec.k", lambda v: v == 15, "k=15 (0.5 of 30)"),
            ),
        )
    )
    # cluster: re-runs
    add(Case("cluster/rerun-same", [cluster(), cluster()], "ok", check=ok_cluster))
    add(
        Case(
            "cluster/rerun-other-k",
            [cluster(), cluster("cluster.levels=[{k:6},{k:2}]")],
            "either",
            ("levels",),
            check=rows_of("cluster/c/level1/assign.npy", 300, unique=False, below=6),
        )
    )
    add(
        Case(
            "cluster/rerun-other-input",
            [cluster(), cluster(path="{data}/f64.npy")],
            "either",
            ("f64.npy",),
            check=ok_cluster,
        )
    )
    changed = cluster(path="{out}/in.npy")
    fresh = [*CLUSTER, "input.path={out}/../in.npy", "out_dir={out}", "name=c"]
    for label, change in [("12%-of-rows", replace_rows_keep_stat()), ("one-row", replace_rows_keep_stat(rows=[137]))]:
        add(
            Case(
                f"cluster/rerun-changed-{label}-same-size-mtime",
                [copy_input("x.npy"), changed, change, changed],
                "either",
                ("in.npy", "changed"),
                check=same_as_fresh("cluster/c", fresh, ("level1/assign.npy", "level1/centroids.npy")),
            )
        )

    # sample
    ok_sample = rows_of("sample/c/indices.npy", 100)
    add(Case("sample/ok", [sample("targets=[100]")], "ok", check=ok_sample))
    add(Case("sample/fraction", [sample("targets=[0.5]")], "ok", check=rows_of("sample/c/indices.npy", 150)))
    add(
        Case(
            "sample/two-budgets",
            [sample("targets=[20,40]")],
            "ok",
            check=all_of(rows_of("sample/c/target_20/indices.npy", 20), rows_of("sample/c/target_40/indices.npy", 40)),
        )
    )
    for strategy in ("closest", "farthest"):
        add(
            Case(
                f"sample/strategy={strategy}", [sample("targets=[100]", f"strategy={strategy}")], "ok", check=ok_sample
            )
        )
    add(Case("sample/method=flat", [sample("targets=[100]", "method=flat")], "ok", check=ok_sample))
    for setting, names in [
        ("targets=[0]", ("targets",)),
        ("targets=[-5]", ("targets",)),
        ("targets=[0.0001]", ("targets",)),
        ("targets=[abc]", ("targets",)),
        ("targets=[]", ("targets",)),
        ("targets=[1.5]", ("targets",)),
        ("strategy=closer", ("strategy",)),
        ("method=deep", ("method",)),
        ("multiplier=0", ("multiplier",)),
        ("seed=-1", ("seed",)),
        ("export=tar", ("export",)),
        ("export_shard_size=0", ("export_shard_size",)),
        ("cluster_dir={data}/nothing", ("nothing",)),
        ("cluster_dir={data}/s", ("manifest.json",)),
        ("+newkey=1", ("newkey",)),
        ("hydra/launcher=submitit_slurm", ("launcher",)),
    ]:
        add(Case(f"sample/{setting}", [sample("targets=[100]", setting)], "refuse", names))
    add(Case("sample/budget-above-pool", [sample("targets=[1000]")], "ok", check=rows_of("sample/c/indices.npy", 300)))
    add(
        Case(
            "sample/rerun-one-then-two",
            [sample("targets=[100]"), sample("targets=[20,40]")],
            "ok",
            check=all_of(absent("sample/c/indices.npy"), rows_of("sample/c/target_20/indices.npy", 20)),
        )
    )
    add(
        Case(
            "sample/rerun-two-then-one",
            [sample("targets=[20,40]"), sample("targets=[100]")],
            "ok",
            check=all_of(absent("sample/c/target_20", "sample/c/target_40"), ok_sample),
        )
    )
    add(
        Case(
            "sample/rerun-other-seed",
            [sample("targets=[100]"), sample("targets=[100]", "seed=3")],
            "ok",
            check=json_field("sample/c/stats.json", "seed", lambda v: v in (3, None), "seed 3"),
        )
    )

    # dedup
    ok_dedup = rows_of("d/kept_indices.npy", None)
    add(Case("dedup/ok", [dedup()], "ok", check=ok_dedup))
    add(
        Case(
            "dedup/pairs",
            [dedup("threshold=0.999", input="{data}/dup.npy")],
            "ok",
            check=json_field("d/dedup.json", "removed", lambda v: v is not None and v >= 100, ">= 100 removed"),
        )
    )
    add(
        Case(
            "dedup/threshold=1.0",
            [dedup("threshold=1.0")],
            "ok",
            check=json_field("d/dedup.json", "removed", lambda v: v == 0, "0 removed"),
        )
    )
    add(Case("dedup/store-input", [dedup(input="{data}/s")], "ok", check=rows_of("d/kept_indices.npy", None, below=40)))
    add(
        Case(
            "dedup/reference",
            [dedup("reference={data}/rows5.npy")],
            "ok",
            check=json_field("d/dedup.json", "contaminated", lambda v: v is not None and v >= 5, ">= 5 contaminated"),
        )
    )
    add(
        Case(
            "dedup/write_store-rerun",
            [dedup(), dedup("write_store=true")],
            "ok",
            check=lambda data, out: None if (out / "d" / "store" / "manifest.json").is_file() else "no store written",
        )
    )
    for setting, names in [
        ("threshold=-2", ("threshold",)),
        ("threshold=1.5", ("threshold",)),
        ("threshold=abc", ("threshold",)),
        ("chunk_size=0", ("chunk_size",)),
        ("backend=fais", ("backend",)),
        ("device=tpu", ("device",)),
        ("shard_size=0", ("shard_size",)),
        ("sim_budget=-1", ("sim_budget",)),
        ("reference={data}/nothing.npy", ("nothing.npy",)),
        ("reference={data}/d4.npy", ("dimension",)),
        ("+newkey=1", ("newkey",)),
        ("hydra/launcher=submitit_slurm", ("launcher",)),
    ]:
        add(Case(f"dedup/{setting}", [dedup(setting)], "refuse", names))
    if not _has_cuda():
        add(Case("dedup/device=cuda", [dedup("device=cuda")], "refuse", ("cuda",)))
    for name in ("missing.npy", "junk.npy", "empty.npy", "vec.npy", "nan.npy", "obj.npy"):
        add(Case(f"dedup/input-{name}", [dedup(input=f"{{data}}/{name}")], "refuse", (name,)))
    add(
        Case("dedup/out-inside-input", [["-m", "curate.dedup", "input={data}/s", "out={data}/s/d"]], "refuse", ("out",))
    )
    add(Case("dedup/out-is-input", [["-m", "curate.dedup", "input={data}/s", "out={data}/s"]], "refuse", ("out",)))
    add(Case("dedup/no-out", [["-m", "curate.dedup", "input={data}/x.npy"]], "refuse", ("out",)))

    # embed
    ok_store = json_field("s/manifest.json", "shards", lambda v: bool(v), "shards")
    add(Case("embed/npy", [embed("data=npy", "data.path={data}/u8.npy")], "ok", check=ok_store))
    add(
        Case(
            "embed/images",
            [embed("data=image_folder", "data.root={data}/images")],
            "ok",
            check=lambda data, out: (
                None if "broken.png" in (out / "s" / "skipped.txt").read_text() else "broken.png not listed as skipped"
            ),
        )
    )
    add(
        Case(
            "embed/text",
            [embed("data=text_lines", "data.path={data}/texts.txt", "encoder=random_projection")],
            "ok",
            check=ok_store,
        )
    )
    add(
        Case(
            "embed/rerun-dtype",
            [
                embed("data=npy", "data.path={data}/u8.npy"),
                embed("data=npy", "data.path={data}/u8.npy", "dtype=float16"),
            ],
            "either",
            ("dtype",),
            check=lambda data, out: (
                None
                if np.load(out / "s" / "emb-00000.npy", allow_pickle=False).dtype == np.float16
                else "float32 rows left after dtype=float16"
            ),
        )
    )
    for setting, names in [
        (("data=npy", "data.path={data}/missing.npy"), ("missing.npy",)),
        (("data=npy", "data.path={data}/junk.npy"), ("junk.npy",)),
        (("data=npy", "data.path={data}/x.npy"), ("x.npy",)),
        (("data=image_folder", "data.root={data}/nothing"), ("nothing",)),
        (("data=image_folder", "data.root={data}/folder"), ("folder",)),
        (("data=text_lines", "data.path={data}/empty.txt", "encoder=random_projection"), ("empty.txt",)),
        (("data=jsonl", "data.path={data}/bad.jsonl", "encoder=random_projection"), ("bad.jsonl",)),
        (("data=npy", "data.path={data}/u8.npy", "batch_size=0"), ("batch_size",)),
        (("data=npy", "data.path={data}/u8.npy", "shard_size=0"), ("shard_size",)),
        (("data=npy", "data.path={data}/u8.npy", "dtype=int8"), ("dtype",)),
        (("data=npy", "data.path={data}/u8.npy", "device=tpu"), ("device",)),
        (("data=npy", "data.path={data}/u8.npy", "data.limit=-1"), ("limit",)),
        (("data=npy", "data.path={data}/u8.npy", "+newkey=1"), ("newkey",)),
        (("data=nothing",), ("nothing",)),
        (("data=npy", "data.path={data}/u8.npy", "encoder=nothing"), ("nothing",)),
    ]:
        add(Case("embed/" + " ".join(setting).replace("{data}/", ""), [embed(*setting)], "refuse", names))

    # combinations a user tries: every sampling strategy with both methods and both kinds of budget
    for strategy in ("random", "closest", "farthest"):
        for method in ("hierarchical", "flat"):
            for target, n in (("37", 37), ("0.25", 75), ("300", 300)):
                add(
                    Case(
                        f"sample/{method}-{strategy}-{target}",
                        [sample(f"targets=[{target}]", f"strategy={strategy}", f"method={method}")],
                        "ok",
                        check=rows_of("sample/c/indices.npy", n),
                    )
                )
    # cluster shapes: one to three levels, splits, resampling, cosine, k-means|| and random init
    for levels, k1 in [
        ("[{k:5}]", 5),
        ("[{k:12},{k:4},{k:2}]", 12),
        ("[{k:6,n_splits:2},{k:3}]", 12),
        ("[{k:8,resample_steps:3,sample_size:4},{k:3,resample_steps:2,sample_size:2}]", 8),
        ("[{k:0.02},{k:auto,sample_size:2}]", 6),
    ]:
        for extra in ((), ("cluster.init=k-means||",), ("cluster.init=random", "cluster.distance=cosine")):
            add(
                Case(
                    f"cluster/levels={levels}" + "".join(f"-{e}" for e in extra),
                    [cluster(f"cluster.levels={levels}", *extra)],
                    "ok",
                    check=rows_of("cluster/c/level1/assign.npy", 300, unique=False, below=k1),
                )
            )
    for threshold, backend in [("0.5", "torch"), ("0.9", "faiss"), ("0.0", "torch"), ("0.99", "faiss")]:
        add(
            Case(
                f"dedup/threshold={threshold}-{backend}",
                [dedup(f"threshold={threshold}", f"backend={backend}")],
                "ok",
                check=ok_dedup,
            )
        )

    # more re-runs and hand-offs between stages
    add(Case("sample/rerun-same", [sample("targets=[100]"), sample("targets=[100]")], "ok", check=ok_sample))
    add(
        Case(
            "sample/from-an-unfinished-clustering",
            [
                cluster("stop_after_level=1"),
                [*sample("targets=[10]")[:2], "cluster_dir={out}/cluster/c", *sample()[3:]],
            ],
            "refuse",
            ("manifest.json",),
        )
    )
    add(
        Case(
            "cluster/rerun-overwrite",
            [cluster(), cluster("cluster.levels=[{k:6},{k:2}]", "overwrite=true")],
            "ok",
            check=rows_of("cluster/c/level1/assign.npy", 300, unique=False, below=6),
        )
    )
    add(
        Case(
            "dedup/rerun-other-threshold",
            [dedup(), dedup("threshold=0.5")],
            "either",
            ("threshold",),
            check=json_field("d/dedup.json", "settings.threshold", lambda v: v == 0.5, "threshold 0.5"),
        )
    )
    add(Case("dedup/rerun-same", [dedup(), dedup()], "ok", check=ok_dedup))
    add(Case("embed/rerun-same", [embed("data=npy", "data.path={data}/u8.npy")] * 2, "ok", check=ok_store))
    add(
        Case(
            "embed/jsonl",
            [embed("data=jsonl", "data.path={data}/texts.jsonl", "encoder=random_projection")],
            "ok",
            check=ok_store,
        )
    )
    add(
        Case(
            "retrieve/ivf",
            [retrieve("per_query=3", "method=ivf", "nlist=8", "nprobe=8", "ivf_train_size=300")],
            "ok",
            check=lambda data, out: None if (out / "r" / "selected.parquet").is_file() else "no selected.parquet",
        )
    )
    add(
        Case(
            "retrieve/per_query-above-pool",
            [retrieve("per_query=400")],
            "either",
            ("per_query",),
            check=lambda data, out: None if (out / "r" / "selected.parquet").is_file() else "no selected.parquet",
        )
    )

    # retrieve
    add(
        Case(
            "retrieve/ok",
            [retrieve("per_query=3")],
            "ok",
            check=lambda data, out: None if (out / "r" / "selected.parquet").is_file() else "no selected.parquet",
        )
    )
    for setting, names in [
        ("per_query=0", ("per_query",)),
        ("per_query=-1", ("per_query",)),
        ("method=annoy", ("method",)),
        ("queries={data}/d4.npy", ("dimension",)),
        ("queries={data}/missing.npy", ("missing.npy",)),
        ("nprobe=0", ("nprobe",)),
        ("+newkey=1", ("newkey",)),
    ]:
        add(Case(f"retrieve/{setting}", [retrieve("per_query=3", setting)], "refuse", names))
    return out


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


# -- running and classifying ----------------------------------------------------------------------
def fill(arg: str, data: Path, out: Path) -> str:
    return arg.replace("{data}", str(data)).replace("{out}", str(out))


def classify(case: Case, results: list[dict[str, Any]], problem: str | None) -> tuple[str, str]:
    """``(outcome, detail)`` of a case from its steps' results and its check's finding."""
    for result in results:
        if result["rc"] is None:
            return "hang", f"ran past the timeout after {result['seconds']:.0f} s"
        if "Traceback (most recent call last)" in result["stderr"]:
            return "traceback", result["stderr"].strip().splitlines()[-1][:300]
    for result in results[:-1]:
        if result["rc"] != 0:
            return "broken-case", "an earlier step failed: " + result["stderr"].strip()[-300:]
    last = results[-1]
    errors = [line for line in last["stderr"].splitlines() if line.startswith("error:")]
    if case.expect == "refuse" or (case.expect == "either" and last["rc"] != 0):
        if last["rc"] == 0:
            return "silent-wrong", "exit 0, a refusal expected"
        if len(errors) != 1:
            return "unclear", f"{len(errors)} error: lines; " + last["stderr"].strip()[-300:]
        missing = [n for n in case.names if n not in errors[0]]
        return ("unclear", f"does not name {missing}: {errors[0][:300]}") if missing else ("pass", errors[0][:300])
    if last["rc"] != 0:
        return "wrong-refusal", (errors[0] if errors else last["stderr"].strip()[-300:])[:300]
    return ("silent-wrong", problem) if problem else ("pass", "")


def slug(name: str) -> str:
    """A folder name for a case (no ``=``, ``,`` or brackets: the path goes into Hydra overrides)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name.replace("/", "__"))


def run_case(case: Case, data: Path, work: Path, timeout: float) -> dict[str, Any]:
    folder = work / "cases" / slug(case.name)
    shutil.rmtree(folder, ignore_errors=True)  # the pass's own scratch folder
    folder.mkdir(parents=True)
    results: list[dict[str, Any]] = []
    for step in case.steps:
        if callable(step):
            step(data, folder)
            continue
        results.append(run([fill(a, data, folder) for a in step], folder, timeout))
        if results[-1]["rc"] is None:
            break
    problem = None
    if results and results[-1]["rc"] == 0 and case.expect in ("ok", "either") and case.check is not None:
        try:
            problem = case.check(data, folder)
        except Exception as failure:  # a check that cannot read the outputs: they are wrong
            problem = f"outputs unreadable: {failure!r}"[:300]
    outcome, detail = classify(case, results, problem)
    seconds = sum(r["seconds"] for r in results)
    return {
        "case": case.name,
        "expect": case.expect,
        "outcome": outcome,
        "detail": detail,
        "seconds": round(seconds, 2),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("hostile"), help="scratch folder (data, one folder per case)")
    parser.add_argument("--only", nargs="*", default=None, help="cases whose name starts with one of these")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (each one process, one thread)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per step before it counts as a hang")
    parser.add_argument(
        "--json", type=Path, default=None, help="write the outcomes here (default <work>/outcomes.json)"
    )
    args = parser.parse_args(argv)
    work = args.work.resolve()
    data = work / "data"
    if not (data / "s" / "manifest.json").is_file():
        make_data(data)
    chosen = [c for c in cases() if args.only is None or any(c.name.startswith(p) for p in args.only)]
    if not chosen:
        raise SystemExit(f"error: --only {args.only} matches no case")
    started = time.perf_counter()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        rows = list(pool.map(lambda c: run_case(c, data, work, args.timeout), chosen))
    counts = Counter(r["outcome"] for r in rows)
    for r in rows:
        if r["outcome"] != "pass":
            print(f"{r['outcome']:<14} {r['case']}: {r['detail']}")
    total = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
    print(f"{len(rows)} cases in {time.perf_counter() - started:.0f} s: {total}")
    path = args.json or work / "outcomes.json"
    path.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    outcomes = main()
    sys.exit(0 if all(r["outcome"] == "pass" for r in outcomes) else 1)
