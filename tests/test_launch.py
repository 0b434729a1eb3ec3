"""Launching at scale: the sbatch scripts of level jobs, level-by-level submission, requeue on a signal."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import submitit

from curate.submit import StageJob, compose_cluster, level_parameters, submit_levels

LEVEL_ARRAYS = ("centroids", "assign", "dist", "offsets", "members")


def sbatch_flags(script: str) -> set[str]:
    return {line for line in script.splitlines() if line.startswith("#SBATCH")}


def assert_same_levels(a: Path, b: Path, n_levels: int) -> None:
    for t in range(1, n_levels + 1):
        for name in LEVEL_ARRAYS:
            left = (a / f"level{t}" / f"{name}.npy").read_bytes()
            assert left == (b / f"level{t}" / f"{name}.npy").read_bytes(), f"level{t}/{name}.npy differs"


def test_level_jobs_sbatch_golden(fake_slurm, tmp_path, capsys):
    from curate.submit import main

    overrides = [
        "+experiment=web_4level",
        f"input.path={tmp_path}/emb",
        f"out_dir={tmp_path}/out",
        "name=web",
        "hydra.launcher.partition=learn",
        "hydra.launcher.account=proj",
        "hydra.launcher.constraint=volta32gb",
    ]
    main(overrides)
    printed = capsys.readouterr().out
    assert "level 1: job 1001" in printed and "level 4: job 1004" in printed
    assert sorted(p.name for p in fake_slurm.iterdir()) == ["1001.sh", "1002.sh", "1003.sh", "1004.sh"]
    folder = tmp_path / "out" / "cluster" / "web" / ".submitit"
    common = {
        "#SBATCH --partition=learn",
        "#SBATCH --account=proj",
        "#SBATCH --constraint=volta32gb",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --cpus-per-task=10",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={folder}/%j/%j_0_log.out",
    }
    level1 = sbatch_flags((fake_slurm / "1001.sh").read_text())
    assert common | {"#SBATCH --nodes=16", "#SBATCH --time=4320", "#SBATCH --job-name=web-level1"} <= level1
    assert not any("dependency" in line for line in level1)
    level2 = sbatch_flags((fake_slurm / "1002.sh").read_text())
    assert (
        common
        | {
            "#SBATCH --nodes=2",
            "#SBATCH --time=1440",
            "#SBATCH --job-name=web-level2",
            "#SBATCH --dependency=afterok:1001",
            "#SBATCH --kill-on-invalid-dep=yes",
        }
        <= level2
    )
    level4 = sbatch_flags((fake_slurm / "1004.sh").read_text())
    assert {"#SBATCH --nodes=1", "#SBATCH --time=720", "#SBATCH --dependency=afterok:1003"} <= level4
    script = (fake_slurm / "1002.sh").read_text()
    assert "srun --unbuffered" in script and "-m submitit.core._submit" in script
    # what each job runs: the stage up to its level; the last one to the end (it writes the manifest)
    jobs = [submitit.SlurmJob(folder=folder / "%j", job_id=str(i)).submission().function for i in (1001, 1002, 1004)]
    assert jobs[0].overrides[-1] == "stop_after_level=1" and jobs[1].overrides[-1] == "stop_after_level=2"
    assert not any(o.startswith("stop_after_level") for o in jobs[2].overrides)
    assert f"out_dir={tmp_path / 'out'}" in jobs[2].overrides


def test_resources_come_from_config_not_code(tmp_path):
    overrides = ["launcher=submitit_slurm", "device=cuda", "hydra.launcher.partition=p", "submit.resources=[{nodes:3}]"]
    cfg = compose_cluster(overrides)
    params = level_parameters(cfg, "slurm", 1, None)
    assert params["slurm_partition"] == "p" and params["nodes"] == 3 and params["gpus_per_node"] == 8
    assert "slurm_dependency" not in params
    # a level without a resources record keeps the launcher's values
    assert level_parameters(cfg, "slurm", 2, "77")["nodes"] == 1
    assert level_parameters(cfg, "slurm", 2, "77")["slurm_dependency"] == "afterok:77"
    with pytest.raises(ValueError, match="submit.resources: 2 records for 1 levels"):
        submit_levels(["cluster=kmeans_flat", "submit.resources=[{nodes:1},{nodes:1}]"], executor="debug")


def test_level_by_level_submission_equals_one_job(tmp_path, toy):
    levels = "cluster.levels=[{k:200,resample_steps:2,sample_size:2},{k:40,resample_steps:2,sample_size:2},{k:10}]"
    overrides = ["input.toy=null", f"input.path={toy}", "cluster=kmeans_flat", levels, "cluster.n_iter=10", "name=l"]
    StageJob("curate.cluster", [*overrides, f"out_dir={tmp_path}/one"], tmp_path / "one")()
    out, jobs = submit_levels([*overrides, f"out_dir={tmp_path}/chain"], executor="debug")
    assert out == tmp_path / "chain" / "cluster" / "l" and len(jobs) == 3
    assert [job.submission().function.overrides[-1] for job in jobs[:2]] == ["stop_after_level=1", "stop_after_level=2"]
    assert all(job.done() for job in jobs)
    assert_same_levels(tmp_path / "one" / "cluster" / "l", out, 3)
    assert (out / "manifest.json").exists() and not (out / "checkpoints").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_stop_after_level_keeps_checkpoints_and_no_manifest(tmp_path, toy):
    overrides = ["input.toy=null", f"input.path={toy}", "cluster=kmeans_flat", "name=s", f"out_dir={tmp_path}"]
    overrides += ["cluster.levels=[{k:100},{k:10}]", "cluster.n_iter=5", "stop_after_level=1"]
    StageJob("curate.cluster", overrides, tmp_path)()
    out = tmp_path / "cluster" / "s"
    assert (out / "checkpoints" / "level1" / "done.json").exists()
    assert not (out / "checkpoints" / "level2").exists() and not (out / "manifest.json").exists()


@pytest.mark.slow
def test_interrupted_job_requeues_and_matches_uninterrupted_run(tmp_path, toy):
    import psutil

    overrides = [
        "input.toy=null",
        f"input.path={toy}",
        "cluster=kmeans_flat",
        "cluster.levels=[{k:400,resample_steps:2,sample_size:2},{k:100,resample_steps:6,sample_size:2}]",
        "cluster.n_iter=30",
        "checkpoint_every=2",
        "name=r",
    ]
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs" / "%j", cluster="local")
    executor.update_parameters(timeout_min=10)
    job = executor.submit(StageJob("curate.cluster", [*overrides, f"out_dir={tmp_path}/int"], tmp_path / "int"))
    out = tmp_path / "int" / "cluster" / "r"
    deadline = time.time() + 120
    while not (out / "checkpoints" / "config.json").exists() and job.state == "RUNNING" and time.time() < deadline:
        time.sleep(0.05)
    interrupted_early = not (out / "manifest.json").exists()
    # what SLURM does before a time limit or a preemption: SIGUSR2 to the job's task
    (task,) = psutil.Process(int(job.job_id)).children()
    os.kill(task.pid, signal.SIGUSR2)
    StageJob("curate.cluster", [*overrides, f"out_dir={tmp_path}/ref"], tmp_path / "ref")()  # meanwhile, here
    assert job.result() == str(tmp_path / "int")
    log = job.stdout()
    assert "Calling checkpoint method" in log and "Requeued job" in log, log[-2000:]
    assert log.count("Starting with JobEnvironment") == 2
    assert_same_levels(tmp_path / "ref" / "cluster" / "r", out, 2)
    assert interrupted_early, "the job finished before the signal; the test did not exercise the requeue"


@pytest.mark.parametrize("stage, overrides", [("dedup", ["input=x", "out=y"]), ("embed", ["out=y"])])
def test_dedup_and_embed_take_the_launchers(stage, overrides, compose_config):
    expected = {"local": "BasicLauncher", "submitit_local": "LocalLauncher", "submitit_slurm": "SlurmLauncher"}
    for launcher, target in expected.items():
        cfg = compose_config(stage, [*overrides, f"launcher={launcher}"], hydra=True)
        assert cfg.hydra.launcher._target_.endswith(target)
        assert {"out", "launcher"} <= set(cfg.hydra.job.config.override_dirname.exclude_keys)
    slurm = compose_config(stage, [*overrides, "launcher=submitit_slurm"], hydra=True)
    assert slurm.hydra.launcher.tasks_per_node == slurm.hydra.launcher.gpus_per_node  # a rank per GPU


def test_dedup_runs_through_submitit_local(tmp_path, cli):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", np.concatenate([x, 2 * x[:50]]))  # 50 scaled copies at the end
    args = [f"input={tmp_path / 'x.npy'}", f"out={tmp_path / 'dd'}", "device=cpu"]
    cli("-m", "curate.dedup", "-m", "launcher=submitit_local", *args)
    np.testing.assert_array_equal(np.load(tmp_path / "dd" / "kept_indices.npy"), np.arange(300))
    assert list((tmp_path / "dd" / ".submitit").iterdir())  # it went through submitit's executor


# ---- what a SLURM job asks for follows the stage's device --------------------------------------
def _sbatch_of(stage: str, overrides: list[str], folder: Path, fake_slurm: Path) -> set[str]:
    """The #SBATCH lines of a job sent with the parameters ``launcher=submitit_slurm`` composes for
    ``stage`` (the mapping hydra-submitit-launcher and curate.submit apply), through submitit."""
    from conftest import compose_config

    from curate.submit import launcher_parameters

    cfg = compose_config(stage, [*overrides, "launcher=submitit_slurm", f"hydra.job.name={stage}"], hydra=True)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(**launcher_parameters(cfg, "slurm"))
    job = executor.submit(int)
    return sbatch_flags((fake_slurm / f"{job.job_id}.sh").read_text())


@pytest.mark.parametrize(
    "stage, overrides, gpus, tasks",
    [
        ("cluster", [], None, 1),  # device=cpu by default: no GPU, one task
        ("cluster", ["device=cuda"], 8, 8),
        ("cluster", ["device=cuda", "hydra.launcher.gpus_per_node=4"], 4, 4),
        ("sample", [], None, 1),  # no device: a CPU stage
        ("dedup", ["input=x", "out=y"], 8, 8),  # device=auto
        ("dedup", ["input=x", "out=y", "device=cpu"], None, 1),
        ("embed", ["out=y"], 8, 8),
        ("embed", ["out=y", "device=cpu"], None, 1),
    ],
)
def test_slurm_jobs_ask_for_gpus_only_on_gpu_stages(tmp_path, fake_slurm, stage, overrides, gpus, tasks):
    folder = tmp_path / "jobs"
    expected = {
        "#SBATCH --cpus-per-task=10",
        f"#SBATCH --error={folder}/%j_0_log.err",
        f"#SBATCH --job-name={stage}",
        "#SBATCH --nodes=1",
        f"#SBATCH --ntasks-per-node={tasks}",
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={folder}/%j_0_log.out",
        "#SBATCH --requeue",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --time=4320",
        "#SBATCH --wckey=submitit",
    }
    if gpus is not None:
        expected.add(f"#SBATCH --gpus-per-node={gpus}")
    assert _sbatch_of(stage, overrides, folder, fake_slurm) == expected


def test_cpu_level_jobs_ask_for_no_gpu(tmp_path, fake_slurm):
    from curate.submit import main

    main(["launcher=submitit_slurm", "cluster=kmeans_flat", f"out_dir={tmp_path}/out", "name=c"])
    (script,) = fake_slurm.iterdir()
    flags = sbatch_flags(script.read_text())
    assert {"#SBATCH --ntasks-per-node=1", "#SBATCH --requeue", "#SBATCH --signal=USR2@120"} <= flags
    assert not any("gpu" in line for line in flags)


def test_plain_hydra_slurm_launcher_is_refused(tmp_path, capsys):
    from curate.core.launch import launcher_problem

    with pytest.raises(SystemExit) as exit_info:
        submit_levels(["hydra/launcher=submitit_slurm", f"out_dir={tmp_path}"])
    assert exit_info.value.code == 2
    assert "use launcher=submitit_slurm" in capsys.readouterr().err and not (tmp_path / "cluster").exists()
    assert launcher_problem(compose_cluster(["launcher=submitit_slurm"]).hydra.launcher) is None
    assert launcher_problem(compose_cluster(["launcher=submitit_local"]).hydra.launcher) is None


@pytest.mark.slow
def test_plain_hydra_slurm_sweep_is_refused_before_queuing(tmp_path, cli):
    args = ["-m", "hydra/launcher=submitit_slurm", "seed=0,1", f"out_dir={tmp_path}"]
    proc = cli("-m", "curate.cluster", *args, check=False)
    assert proc.returncode == 2 and "error: hydra/launcher=submitit_slurm has no requeue settings" in proc.stderr
    assert not (tmp_path / "multirun").exists()  # Hydra's sweep folder is made when jobs are sent


def test_submit_prints_the_config_like_a_hydra_app(tmp_path, capsys):
    from omegaconf import OmegaConf, open_dict

    from curate.submit import main

    overrides = ["cluster=kmeans_flat", f"out_dir={tmp_path}/out", "seed=7"]
    main(["--cfg", "job", *overrides])
    printed = OmegaConf.create(capsys.readouterr().out)
    expected = compose_cluster(overrides)
    with open_dict(expected):
        del expected["hydra"]
    assert printed == expected and printed.seed == 7
    main(["--cfg", "hydra", "-p", "hydra.run.dir", "--resolve", *overrides])
    assert capsys.readouterr().out.strip() == f"{tmp_path}/out/cluster/kmeans_flat"
    assert not (tmp_path / "out").exists()  # nothing submitted


def test_submit_multirun_sends_one_chain_per_sweep_point(tmp_path, fake_slurm, capsys):
    from curate.submit import main

    main(["-m", "launcher=submitit_slurm", "cluster=kmeans_flat", f"out_dir={tmp_path}/out", "name=c", "seed=0,1"])
    printed = capsys.readouterr().out
    sweep = tmp_path / "out" / "multirun" / "cluster" / "c"
    # Hydra's sweep folders: <sweep.dir>/<override_dirname>
    assert sorted(p.name for p in sweep.iterdir()) == ["cluster=kmeans_flat,seed=0", "cluster=kmeans_flat,seed=1"]
    assert printed.count("level 1: job") == 2 and len(list(fake_slurm.iterdir())) == 2
    scripts = [script.read_text() for script in sorted(fake_slurm.iterdir())]
    assert all("--requeue" in script for script in scripts)


def test_submit_refuses_an_unknown_flag(tmp_path, cli):
    proc = cli("-m", "curate.submit", "--cfgg", "job", f"out_dir={tmp_path}", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown flag --cfgg")
