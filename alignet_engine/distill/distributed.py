"""Distillation in several processes (``torchrun``): the process group and keeping ranks in step.

:func:`alignet_engine.distill.distill` already trains with ``DistributedDataParallel`` when a
default process group exists. What a *launcher* needs besides is here:

* :meth:`LaunchEnv.from_environ` reads what ``torchrun`` (``python -m torch.distributed.run``)
  puts in every worker's environment: ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` (and
  ``MASTER_ADDR`` / ``MASTER_PORT`` for the rendezvous).
* :func:`rank_device` turns a device preference into this process's device: ``cuda:LOCAL_RANK``
  on a GPU machine (one GPU per process), else the CPU.
* :func:`process_group` initialises the group — NCCL on CUDA, gloo on the CPU — with a timeout,
  so a collective whose peer died ends in an error instead of a hang, and destroys it after.
* :class:`Agreement` brackets the work a job does *outside* training (opening the project,
  writing the run): every rank runs the block, then all exchange whether it succeeded, so an
  error on one rank (a locked project, a bad checkpoint on rank 0) becomes an error on every
  rank at once rather than a peer waiting forever at the next collective. Rank 0 can hand a
  value (a run id) to the others through it.

Failures *during* training are collectives that break: a rank that raises exits, gloo's
collectives on its peers fail at once ("connection closed"), NCCL's after the timeout, and
``torchrun`` itself tears the remaining workers down (SIGTERM, then SIGKILL) as soon as one
exits non-zero.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Literal

import torch

from alignet_engine.base.devices import pick_device
from alignet_engine.errors import AlignetError, InputError

logger = logging.getLogger(__name__)

#: Seconds a collective may wait for its peers before failing (the process-group timeout).
#: Outside training the ranks wait for rank 0 to write the project (a file copy per
#: transaction) and the student file, so this is generous; a dead peer under torchrun is
#: noticed far sooner (the launcher tears the group down).
DEFAULT_TIMEOUT_S = 1800.0


class PeerFailedError(AlignetError):
    """Another process of a distributed job failed; this one stops too."""


class LauncherStoppedError(AlignetError):
    """The launcher stopped this process (SIGTERM): another process failed or the job was
    stopped."""


@dataclasses.dataclass(frozen=True)
class LaunchEnv:
    """This process's place in a multi-process launch.

    Attributes
    ----------
    world_size : number of processes (> 1).
    rank : this process's global rank, 0 ≤ rank < world_size; rank 0 is the only writer.
    local_rank : its index on this node (the CUDA device it uses).
    """

    world_size: int
    rank: int
    local_rank: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> LaunchEnv | None:
        """The launch ``torchrun`` describes in the environment, or None for one process.

        ``WORLD_SIZE`` unset or 1 means a single process (nothing to coordinate).

        Raises
        ------
        InputError
            The variables are not integers or ``RANK`` lies outside ``[0, WORLD_SIZE)``.
        """
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env:
            return None
        try:
            world = int(env["WORLD_SIZE"])
            rank = int(env.get("RANK", "0"))
            local = int(env.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise InputError(
                "WORLD_SIZE, RANK and LOCAL_RANK must be integers (as torchrun sets them); got "
                f"{env.get('WORLD_SIZE')!r}, {env.get('RANK')!r}, {env.get('LOCAL_RANK')!r}",
                field="WORLD_SIZE",
            ) from None
        if world <= 1:
            return None
        if not 0 <= rank < world or local < 0:
            raise InputError(
                f"RANK {rank} / LOCAL_RANK {local} do not fit WORLD_SIZE {world}; launch with "
                "torchrun, which sets them",
                field="RANK",
            )
        return cls(world, rank, local)


def world_rank() -> tuple[int, int]:
    """``(world size, rank)`` of the initialised default process group, else ``(1, 0)``."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def local_rank() -> int:
    """This process's ``LOCAL_RANK`` (0 when not launched by torchrun)."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def rank_device(preference: str, launch: LaunchEnv | None = None) -> torch.device:
    """The device this process trains on.

    One process: :func:`alignet_engine.base.devices.pick_device` of ``preference``. Several
    processes: ``"auto"`` or ``"cuda"`` on a CUDA machine give ``cuda:LOCAL_RANK`` (one GPU per
    process, as torchrun's ``--nproc-per-node`` = GPUs per node expects); ``"cpu"`` (or
    ``"auto"`` without CUDA) gives the CPU.

    Parameters
    ----------
    preference : ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
    launch : the launch; None = read it from the process group / environment.

    Raises
    ------
    InputError
        Several processes with ``cuda:N`` (each process takes its own GPU) or ``mps``
        (DistributedDataParallel runs on CUDA or the CPU only), or fewer GPUs than
        processes on this node.
    DeviceUnavailableError
        As :func:`pick_device` (e.g. ``cuda`` on a machine without CUDA).
    """
    world, _ = world_rank()
    if launch is None and world == 1:
        launch = LaunchEnv.from_environ()
    if launch is None and world == 1:
        return pick_device(preference)
    index = launch.local_rank if launch is not None else local_rank()
    text = str(preference).strip().lower()
    if text.startswith("cuda:"):
        raise InputError(
            f"with several processes each takes the GPU of its LOCAL_RANK; use --device cuda "
            f"(or auto), not {preference!r} (choose GPUs with CUDA_VISIBLE_DEVICES)",
            field="device",
        )
    device = pick_device(preference)
    if device.type == "mps":
        raise InputError(
            "several processes train on CUDA GPUs or on the CPU; mps is not supported by "
            "DistributedDataParallel; use --device cpu or a single process",
            field="device",
        )
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if index >= count:
            raise InputError(
                f"LOCAL_RANK {index} has no GPU: this node has {count}; start at most {count} "
                "processes per node (torchrun --nproc-per-node)",
                field="device",
            )
        return torch.device("cuda", index)
    return device


@contextlib.contextmanager
def process_group(
    launch: LaunchEnv, device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Iterator[None]:
    """Initialise the default process group for ``launch`` on ``device``; destroy it after.

    NCCL for a CUDA device (after ``torch.cuda.set_device``, and bound to it so the
    communicator is created eagerly), gloo otherwise. The rendezvous is ``env://``: the
    ``MASTER_ADDR`` / ``MASTER_PORT`` torchrun sets.

    Raises
    ------
    InputError
        ``MASTER_ADDR`` / ``MASTER_PORT`` are missing (not launched by torchrun), or a bad
        ``timeout_s``.
    """
    import torch.distributed as dist

    if not dist.is_available():
        raise InputError(
            "this PyTorch build has no torch.distributed; run in one process",
            field="WORLD_SIZE",
        )
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise InputError(
            f"WORLD_SIZE is {launch.world_size} but {', '.join(missing)} is not set; launch "
            "the processes with torchrun (python -m torch.distributed.run), which sets them",
            field=missing[0],
        )
    if not timeout_s > 0:
        raise InputError(f"must be > 0 seconds; got {timeout_s!r}", field="dist_timeout")
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        kwargs["device_id"] = device
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        init_method="env://",
        rank=launch.rank,
        world_size=launch.world_size,
        timeout=datetime.timedelta(seconds=float(timeout_s)),
        **kwargs,
    )
    logger.info("process %d of %d on %s (%s)", launch.rank, launch.world_size, device, backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


class Agreement:
    """Run a block on every rank, then make every rank see whether all of them succeeded.

    ::

        with Agreement("opening the project") as agreed:
            if rank == 0:
                agreed.value = project.begin_job(...)
        run_id = agreed.value   # rank 0's value, on every rank

    On leaving the block every rank sends whether it raised (the error's text) and rank 0
    sends :attr:`value`; a rank that raised re-raises its own error, the others raise
    :class:`PeerFailedError` naming the failed rank and its error. Every rank must enter the
    same agreements in the same order. With one process (no process group) it does nothing
    and costs nothing. ``KeyboardInterrupt`` / ``SystemExit`` leave at once without
    agreeing: the launcher tears the group down.

    Attributes
    ----------
    what : what the block does, for the messages ("while <what>").
    value : set by rank 0 inside the block (picklable); rank 0's value on every rank after.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.value: Any = None

    def __enter__(self) -> Agreement:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:  # never swallows: a rank's error is re-raised on every rank
        if exc is not None and not isinstance(exc, Exception):
            return False
        world, rank = world_rank()
        if world == 1:
            return False
        note = None if exc is None else f"{type(exc).__name__}: {exc}"
        notes: list[Any] = [None] * world
        torch.distributed.all_gather_object(notes, (note, self.value if rank == 0 else None))
        self.value = notes[0][1]
        if exc is None:
            failed = [(r, n) for r, (n, _) in enumerate(notes) if n is not None]
            if failed:
                peer, text = failed[0]
                raise PeerFailedError(f"process {peer} of {world} failed while {self.what}: {text}")
        return False
