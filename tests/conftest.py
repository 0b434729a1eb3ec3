"""Test settings: offline, no wandb, small thread pools, deterministic seeds."""

import importlib.util
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

# Tests that start other processes (a stage run as a user runs it, spawned gloo ranks, the tiny
# SSL pipeline, a browser) are `slow` through the fixtures they take; the others that spawn carry the mark
# themselves. `python -m pytest -m "not slow"` is the inner loop; `python -m pytest` runs all.
SLOW_FIXTURES = {"cli", "free_port", "tiny_run", "headless_page"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not `in item.keywords`: folder names count there
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread per test: on 2 shared cores, 2 OpenMP threads were 20-60x slower for small ops,
    and spawned ranks would oversubscribe the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
CONFIGS = str(REPO / "configs")


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
        # this checkout first on the path: the code under test, whatever the editable install points at
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        self.env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}

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
    (50) folders of PNG files (curate.data.datasets.fmnist_folders)."""
    from curate.data.datasets.fmnist_folders import write_fmnist_folders

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


def compose_config(config_name: str, overrides: Sequence[str] = (), hydra: bool = False) -> DictConfig:
    """``configs/<config_name>.yaml`` composed with ``overrides`` as the stage's ``@hydra.main`` would.

    Every stage's schemas are registered first (the stage modules register them on import), so a
    misspelled key fails here as it does on the command line. ``hydra=True`` keeps the ``hydra``
    node (launcher, run dir). Import it (``from conftest import compose_config``) or use the
    fixture of the same name.
    """
    from hydra import compose, initialize_config_dir

    import curate.cluster  # noqa: F401  (each stage module registers its schemas)
    import curate.dedup  # noqa: F401
    import curate.embed.config  # noqa: F401
    import curate.retrieve  # noqa: F401
    import curate.sample  # noqa: F401
    import selfsup.config  # noqa: F401
    from curate.pipeline import register_schema

    register_schema()  # the pipeline's schema: every stage's typed config
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra)


@pytest.fixture(name="compose_config", scope="session")
def _compose_config_fixture():
    """:func:`compose_config` as a fixture."""
    return compose_config


@pytest.fixture
def toy(tmp_path) -> Path:
    """``tmp_path/x.npy``: (2000, 2) float32, a dense blob, a small tight blob and a uniform
    background (1600 / 300 / 100 points), with ``labels.npy`` (0 / 1 / 2) beside it."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1, 0.5, (1600, 2)), rng.normal(1, 0.3, (300, 2)), rng.uniform(-3, 3, (100, 2))])
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    np.save(tmp_path / "labels.npy", np.repeat([0, 1, 2], [1600, 300, 100]))
    return tmp_path / "x.npy"


# ---- a real browser for the report ------------------------------------------------------------
BROWSERS = ("chromium-headless-shell", "chrome-headless-shell", "chromium", "google-chrome")


class HeadlessPage:
    """Drives a headless Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    NUL-separated JSON on file descriptors 3 and 4, so no websocket library is needed)."""

    def __init__(self, browser: str) -> None:
        import json

        self._json = json
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()

        def fds() -> None:  # the child sees the pipes as fds 3 (commands in) and 4 (replies out)
            os.dup2(to_chrome, 3)
            os.dup2(from_chrome, 4)

        args = [browser, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run"]
        self.proc = subprocess.Popen(
            [*args, "about:blank"], preexec_fn=fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []

    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, self._json.dumps(message).encode() + b"\0")
        while True:
            reply = self._next()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _next(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise RuntimeError(f"the browser exited: {self.proc.stderr.read().decode()[-2000:]}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return self._json.loads(raw)

    def load(self, url: str) -> dict:
        """Open ``url``, wait for its load event; return ``images`` (src, complete, natural size)
        and ``errors`` (console errors, exceptions, failed resource loads)."""
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self._send(f"{domain}.enable", session=session)
        self.events.clear()
        self._send("Page.navigate", {"url": url}, session=session)
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._next())
        images = self._send(
            "Runtime.evaluate",
            {
                "expression": "Array.from(document.images).map(i => ({src: i.getAttribute('src'), "
                "complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))",
                "returnByValue": True,
            },
            session=session,
        )["result"]["value"]
        errors = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(str(params.get("args")))
            elif method == "Runtime.exceptionThrown":
                errors.append(str(params.get("exceptionDetails")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                errors.append(params["entry"].get("text", ""))
            elif method == "Network.loadingFailed":
                errors.append(f"loading failed: {params.get('errorText')}")
        self._send("Target.closeTarget", {"targetId": target})
        return {"images": images, "errors": errors}

    def close(self) -> None:
        try:
            self._send("Browser.close")
        except (RuntimeError, OSError):
            pass
        self.proc.wait(timeout=30)
        os.close(self._write)
        os.close(self._read)


@pytest.fixture(scope="session")
def headless_page():
    """A headless Chromium (Debian's ``chromium-headless-shell``, or ``$CURATE_BROWSER``); skipped
    with the reason when none is installed."""
    import shutil

    browser = os.environ.get("CURATE_BROWSER") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if browser is None:
        pytest.skip(f"no headless browser ({', '.join(BROWSERS)}); apt-get install chromium-headless-shell")
    page = HeadlessPage(browser)
    yield page
    page.close()
