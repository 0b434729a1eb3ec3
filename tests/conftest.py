"""Test settings: offline, no wandb, small thread pools, deterministic seeds."""

import importlib.util
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread per test: on 2 shared cores, 2 OpenMP threads were 20-60x slower for small ops,
    and spawned ranks would oversubscribe the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="session")
def load_script():
    """``load_script(name)`` imports ``scripts/<name>.py`` as a module (scripts/ is no package)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"_scripts_{name}", SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        return module

    return load


class _Cli:
    """Run ``python <args>`` the way a user does: one thread, Hydra's one-line errors."""

    def __init__(self) -> None:
        self.env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=self.env, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} failed:\n{proc.stderr[-3000:]}")
        return proc


@pytest.fixture(scope="session")
def cli() -> _Cli:
    """``cli("-m", "curate.cluster", ...)`` -> ``CompletedProcess``; ``cli.env`` for ``Popen``."""
    return _Cli()


FAKE_SBATCH = """#!/bin/bash
# test double of sbatch: keeps the script, answers like SLURM
mkdir -p "$FAKE_SLURM_DIR"
n=$(( $(ls "$FAKE_SLURM_DIR" | wc -l) + 1001 ))
cp "$1" "$FAKE_SLURM_DIR/$n.sh"
echo "Submitted batch job $n"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """``sbatch`` and ``srun`` doubles on PATH; returns the folder where the submitted scripts land."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "srun").write_text("#!/bin/bash\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(tmp_path / "sbatch"))
    return tmp_path / "sbatch"


@pytest.fixture(scope="session")
def fmnist_folders(tmp_path_factory) -> Path:
    """A 150-image long-tailed Fashion-MNIST pool, a 20-image seed folder and labelled train (80) / test
    (50) folders of PNG files (curate.datasets.fmnist_folders)."""
    from curate.datasets.fmnist_folders import write_fmnist_folders

    out = tmp_path_factory.mktemp("fmnist_folders")
    write_fmnist_folders(out, seed_per_class=2, eval_train_per_class=8, test_per_class=5, pool_size=150)
    return out


@pytest.fixture
def free_port() -> int:
    """A free TCP port on localhost for a spawned gloo group."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def blobs() -> np.ndarray:
    """(3000, 8) float32: 6 well separated Gaussian blobs of unequal sizes."""
    rng = np.random.default_rng(0)
    sizes = [1200, 800, 500, 300, 150, 50]
    centers = rng.normal(scale=10.0, size=(len(sizes), 8))
    x = np.concatenate([c + rng.normal(size=(s, 8)) for c, s in zip(centers, sizes)])
    return x.astype(np.float32)
