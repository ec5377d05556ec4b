"""torch.distributed plumbing for `train`: read torchrun's environment, pick the backend, reduce sums across ranks."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dist:
    """Where this process sits: rank, world size and local rank (0, 1, 0 when not under torchrun)."""

    rank: int
    world: int
    local_rank: int

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, logs and the progress bar."""
        return self.rank == 0


def from_env() -> Dist:
    """torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; plain `resnet-spec train` sets none of them."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def restart_count() -> int:
    """How many times torchrun's elastic agent has restarted this worker group after a failure (0 otherwise)."""
    try:
        return max(int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")), 0)
    except ValueError:
        return 0


def pick_device(name: str, dist: Dist) -> torch.device:
    """The device to train on: 'auto' is cuda:LOCAL_RANK when CUDA is there, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", dist.local_rank if dist.enabled else torch.cuda.current_device())
    return device


def init(dist: Dist, device: torch.device) -> None:
    """Join the process group: nccl for CUDA, gloo for CPU.

    The store is torch's env:// one, under a prefix per torchrun attempt: the elastic agent's store outlives a
    restart, and without the prefix a restarted rank can read a dead rank's address and fail to connect.
    """
    if not dist.enabled:
        return
    import torch.distributed as td
    from torch.distributed.rendezvous import rendezvous
    if device.type == "cuda":
        torch.cuda.set_device(device)
    store, rank, world = next(rendezvous("env://"))
    td.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                          store=td.PrefixStore(f"resnet_spec/attempt_{restart_count()}", store),
                          rank=rank, world_size=world, device_id=device if device.type == "cuda" else None)


def shutdown(dist: Dist, wait: bool) -> None:
    """Leave the process group; with wait, first let every rank arrive (rank 0 may still be writing).

    A rank that tears gloo down while a peer is still connected can abort ("terminate called without an
    active exception"). After an error there is no waiting: the peers are stopped by torchrun.
    """
    if dist.enabled:
        import torch.distributed as td
        if td.is_initialized():
            if wait:
                td.barrier()
            td.destroy_process_group()


def all_sum(values: torch.Tensor, dist: Dist) -> torch.Tensor:
    """Element-wise sum of a float64 vector over all ranks (itself when not distributed)."""
    if dist.enabled:
        import torch.distributed as td
        # float64 keeps image counts exact
        td.all_reduce(values, op=td.ReduceOp.SUM)
    return values


def lost_peer(e: BaseException) -> bool:
    """Whether a collective failed because a peer went away (gloo's closed or reset connection, a backend error)."""
    import torch.distributed as td
    text = str(e)
    return isinstance(e, td.DistError) or any(s in text for s in (
        "Connection closed by peer", "Connection reset by peer", "Broken pipe", "Connection refused"))


def all_gather_int(value: int, dist: Dist, device: torch.device) -> list[int]:
    """Every rank's value of an integer, in rank order ([value] when not distributed)."""
    if not dist.enabled:
        return [value]
    import torch.distributed as td
    # On the training device: nccl gathers CUDA tensors only, gloo CPU ones.
    gathered = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.world)]
    td.all_gather(gathered, torch.tensor([value], dtype=torch.int64, device=device))
    return [int(t.item()) for t in gathered]


def broadcast_buffers(model: torch.nn.Module, dist: Dist) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts them only at the start of each forward, so after the last training step each rank holds
    statistics from its own last batch. Evaluating with rank 0's makes the logged val metrics those of the
    weights rank 0 saves.
    """
    if dist.enabled:
        import torch.distributed as td
        for buf in model.buffers():
            td.broadcast(buf, src=0)
