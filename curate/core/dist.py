"""torch.distributed set-up and guarded collectives.

One place resolves how this process was launched:

- torchrun (or any launcher exporting ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``),
- SLURM (``SLURM_PROCID``/``SLURM_NTASKS``; submitit sets these),
- nothing: a single process, where every collective below is a no-op.

The backend follows the stage's device: NCCL for a stage that runs on CUDA, gloo for a CPU
stage (even on a machine with GPUs: under NCCL every collective of a CPU stage would go through a
GPU). Each rank's GPU is ``LOCAL_RANK``, else ``rank % device_count`` (a plain RANK/WORLD_SIZE
launch then still spreads the ranks over the GPUs). Collectives move small tensors to the
communication device and back, so callers may keep CPU tensors even under NCCL.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import logging
import os
import subprocess
import threading
from collections.abc import Iterator

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


_LOCAL_ONLY = threading.local()
# init_process_group(device_id=...) binds the group to this rank's GPU (torch >= 2.3)
_TAKES_DEVICE_ID = dist.is_available() and "device_id" in inspect.signature(dist.init_process_group).parameters


def is_distributed() -> bool:
    """True when a process group with more than one rank is initialised (and not inside
    :func:`local_only`)."""
    if getattr(_LOCAL_ONLY, "active", False):
        return False
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Run a block as if this process were alone: collectives become no-ops and ranks report 0/1.

    Used for replicated work (every rank computes the same small problem, e.g. the upper levels
    of the hierarchy) with the same code that serves sharded work.
    """
    previous = getattr(_LOCAL_ONLY, "active", False)
    _LOCAL_ONLY.active = True
    try:
        yield
    finally:
        _LOCAL_ONLY.active = previous


def get_rank() -> int:
    if getattr(_LOCAL_ONLY, "active", False):
        return 0
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    if getattr(_LOCAL_ONLY, "active", False):
        return 1
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def resolve_device(name: str, key: str = "device") -> torch.device:
    """The device a stage's ``device`` setting names, for this rank.

    ``auto``: this rank's GPU (``LOCAL_RANK``) when CUDA is available, else the CPU; ``cuda``: this
    rank's GPU; ``cuda:N`` and ``cpu`` as given.

    Raises:
        ValueError: a CUDA device is asked for but CUDA is not available (the message names ``key``).
    """
    name = str(name)
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"{key}={name!r} but CUDA is not available")
    if name in ("auto", "cuda"):
        return local_cuda_device()
    return torch.device(name)


def is_main_process() -> bool:
    """True on global rank 0, also inside :func:`local_only` (file writes stay on one rank)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _slurm_env() -> dict[str, str] | None:
    """torch.distributed variables derived from a SLURM allocation, or None outside one."""
    if "SLURM_PROCID" not in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return None
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST", "")
    master = os.environ.get("MASTER_ADDR")
    if master is None:
        try:
            hosts = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
            ).stdout.split()
            master = hosts[0]
        except (OSError, subprocess.CalledProcessError, IndexError):
            master = "127.0.0.1"
    # A port derived from the job id so two jobs sharing a node do not collide.
    port = os.environ.get("MASTER_PORT") or str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000)
    return {
        "RANK": os.environ["SLURM_PROCID"],
        "WORLD_SIZE": os.environ["SLURM_NTASKS"],
        "LOCAL_RANK": os.environ.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": master,
        "MASTER_PORT": port,
    }


def wants_cuda(device: str | torch.device | None, cuda_available: bool | None = None) -> bool:
    """Whether a stage configured with ``device`` runs on CUDA: ``cuda``/``cuda:N``, or ``auto`` /
    None (the caller did not say) when CUDA is available."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if device is None or str(device) == "auto":
        return cuda_available
    return torch.device(device).type == "cuda"


def backend_for(device: str | torch.device | None, cuda_available: bool | None = None) -> str:
    """``nccl`` for a stage running on CUDA (see :func:`wants_cuda`), ``gloo`` otherwise."""
    return "nccl" if wants_cuda(device, cuda_available) else "gloo"


def local_rank(env: dict[str, str] | None = None, device_count: int | None = None) -> int:
    """This process's GPU index on its node: ``LOCAL_RANK`` (torchrun, SLURM via
    :func:`_slurm_env`), else ``RANK % device_count`` (a plain RANK/WORLD_SIZE launch), else 0."""
    env = os.environ if env is None else env
    if "LOCAL_RANK" in env:
        return int(env["LOCAL_RANK"])
    if device_count is None:
        device_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    rank = int(env.get("RANK", "0"))
    return rank % device_count if device_count > 0 else 0


def local_cuda_device() -> torch.device:
    """This rank's GPU (:func:`local_rank`, wrapped into the visible devices)."""
    return torch.device("cuda", local_rank() % max(1, torch.cuda.device_count()))


def init_distributed(
    backend: str | None = None, timeout_s: float = 1800.0, device: str | torch.device | None = None
) -> tuple[int, int]:
    """Initialise torch.distributed from the environment; return ``(rank, world_size)``.

    Does nothing for a single process or when a group already exists. ``backend`` defaults to
    :func:`backend_for` the stage's ``device`` (``cpu``, ``cuda``, ``auto``; None: as ``auto``).
    Under NCCL the process binds its GPU (:func:`local_rank`) first and passes it as
    ``device_id``, so collectives never land on another rank's GPU.
    """
    if dist.is_initialized():
        return get_rank(), get_world_size()
    env = None
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        env = {k: os.environ[k] for k in ("RANK", "WORLD_SIZE")}
    else:
        env = _slurm_env()
        if env is not None:
            os.environ.update(env)
    if env is None or int(env["WORLD_SIZE"]) <= 1:
        return 0, 1
    if backend is None:
        backend = backend_for(device)
    kwargs: dict = {}
    if backend == "nccl":
        gpu = local_cuda_device()
        torch.cuda.set_device(gpu)
        if _TAKES_DEVICE_ID:
            kwargs["device_id"] = gpu
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    log.info("initialised %s process group: rank %d of %d", backend, get_rank(), get_world_size())
    return get_rank(), get_world_size()


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


_REDUCE_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` over ranks in place with ``op`` (``sum``, ``max`` or ``min``); no-op at
    world size 1; returns it."""
    if not is_distributed():
        return tensor
    comm = tensor.to(_comm_device())
    dist.all_reduce(comm, op=_REDUCE_OPS[op])
    if comm is not tensor:
        tensor.copy_(comm)
    return tensor


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op at world size 1); returns it."""
    return all_reduce_(tensor, "sum")


def all_gather_stack(tensor: torch.Tensor) -> torch.Tensor:
    """Stack a same-shaped tensor from every rank: ``(world_size, *tensor.shape)``."""
    if not is_distributed():
        return tensor.unsqueeze(0)
    comm = tensor.to(_comm_device()).contiguous()
    out = [torch.empty_like(comm) for _ in range(get_world_size())]
    dist.all_gather(out, comm)
    return torch.stack(out).to(tensor.device)


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``(n_r, ...)`` tensor in rank order (shards may differ in size)."""
    if not is_distributed():
        return tensor
    sizes = all_gather_stack(torch.tensor([tensor.shape[0]], dtype=torch.int64)).flatten()
    padded = tensor.new_zeros((int(sizes.max()), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    stacked = all_gather_stack(padded)
    return torch.cat([stacked[r, : int(n)] for r, n in enumerate(sizes)])


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def setup_logging(level: int = logging.INFO, all_ranks: bool = False) -> None:
    """Log on rank 0 only (warnings still pass on every rank), unless ``all_ranks``.

    One console handler (stderr) with the rank in each line. File handlers already on the root
    logger (Hydra's ``<run dir>/<job name>.log``) are kept and given the same format, so the job's
    log file holds what the console showed. Idempotent.
    """
    rank = get_rank()
    quiet = rank != 0 and not all_ranks
    root = logging.getLogger()
    formatter = logging.Formatter(f"[%(asctime)s r{rank}] %(levelname)s %(name)s: %(message)s")
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:  # consoles (Hydra's on stdout, ours); not files, not pytest's
            root.removeHandler(handler)
        elif isinstance(handler, logging.FileHandler):
            handler.setFormatter(formatter)
    console = logging.StreamHandler()  # stderr
    console.setFormatter(formatter)
    root.addHandler(console)
    root.setLevel(logging.WARNING if quiet else level)
