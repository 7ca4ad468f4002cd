"""One run on several processes: the process group torchrun describes in the environment, or none.

`torchrun --nproc_per_node N -m mnist_kit train RECIPE` sets WORLD_SIZE, RANK and LOCAL_RANK; without them
training runs exactly as a single process. Backend nccl on CUDA (device cuda:LOCAL_RANK), gloo on the CPU.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mnist_kit.device import select_device
from mnist_kit.errors import UserError


@dataclass(frozen=True)
class World:
    """This process's place in the run: `size` processes, this one is `rank` (0 writes the files)."""

    size: int = 1
    rank: int = 0
    backend: str | None = None
    local_rank: int = 0  # the process's number on its machine

    @property
    def fetches(self) -> bool:
        """One process per machine fetches the data (the others wait): a node needs its own verified copy."""
        return self.local_rank == 0

    @property
    def main(self) -> bool:
        return self.rank == 0


ALONE = World()  # a single process


def join(requested_device: str) -> tuple[World, torch.device]:
    """Join torchrun's process group if there is one; the device this process trains on."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), select_device(requested_device)
    device = select_device(requested_device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return World(size=dist.get_world_size(), rank=dist.get_rank(), backend=backend,
                 local_rank=int(os.environ.get("LOCAL_RANK", "0"))), device


def barrier(world: World) -> None:
    """Wait for every process (nothing to wait for alone)."""
    if world.size > 1:
        dist.barrier()


def leave() -> None:
    """Leave the process group, if this process joined one (torchrun's processes then exit cleanly)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def share(rows: torch.Tensor, world: World) -> torch.Tensor:
    """This process's contiguous share of `rows`: a global batch of indices, or a split to evaluate."""
    if world.size == 1:
        return rows
    return rows.tensor_split(world.size)[world.rank]


def sum_in_place(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """`tensor` summed over every process (all-reduce), in place; returned for chaining."""
    if world.size > 1:
        dist.all_reduce(tensor)
    return tensor


def buffers_from_rank0(module: torch.nn.Module, world: World) -> None:
    """Give every process rank 0's buffers: BatchNorm statistics drift apart per process (DDP keeps the parameters
    equal)."""
    if world.size > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def check_sync_bn(sync_bn: bool, world: World, device: torch.device) -> None:
    """SyncBatchNorm works on CUDA only: say so before training starts (alone, there is nothing to sync)."""
    if sync_bn and world.size > 1 and device.type != "cuda":
        raise UserError(f"train.sync_bn needs CUDA: PyTorch's SyncBatchNorm refuses {device.type} modules. On the "
                        f"CPU leave it false: each process normalizes its share of the batch and DDP gives every "
                        f"process rank 0's running statistics at each step")


def check_batch(batch_size: int, world: World) -> None:
    """The global batch must split evenly over the processes."""
    if batch_size % world.size:
        raise UserError(f"data.batch_size {batch_size} does not split over {world.size} processes: "
                        f"use a multiple of {world.size}")
