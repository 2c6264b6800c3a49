"""The body of the distributed tests: runs in each of 2 spawned processes (gloo on 127.0.0.1, CPU).

Each scenario trains the same small float64 model for a few steps on a batch split between the ranks, and
saves the final full parameters; the test compares them with a single-process run on the whole batch.
"""

from __future__ import annotations

import os
import traceback

import torch
import torch.distributed as dist

STEPS = 6
OPTIMIZER_ARGS = dict(lr=0.05, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=1e-2)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)
    ).double()


def make_data():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(8, 6, generator=generator, dtype=torch.float64)
    y = torch.randn(8, 1, generator=generator, dtype=torch.float64)
    return x, y


def train(model, optimizer, x, y, steps=STEPS):
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()


def single_process_reference():
    """Parameters after training on the whole batch in one process."""
    from backends.torch import ALTO

    model = make_model()
    x, y = make_data()
    train(model, ALTO(model.parameters(), implementation="core", **OPTIMIZER_ARGS), x, y)
    return [p.detach().clone() for p in model.parameters()]


def _full(tensor):
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


class _shard_norms:
    """Makes the DTensor namespace return norms of the local shard, replicated as if they were full norms."""

    def __enter__(self):
        from torch.distributed.tensor import DTensor, Replicate

        from backends.torch import _state

        self._state = _state
        self._original = _state._ReplicatedNorms.vector_norm

        def vector_norm(this, x, **kwargs):
            if isinstance(x, DTensor):
                local = torch.linalg.vector_norm(x.to_local(), **kwargs)
                return DTensor.from_local(local, x.device_mesh, [Replicate()] * x.device_mesh.ndim)
            return self._original(this, x, **kwargs)

        _state._ReplicatedNorms.vector_norm = vector_norm
        return self

    def __exit__(self, *exc):
        self._state._ReplicatedNorms.vector_norm = self._original


def worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    results = {}
    try:
        from torch.distributed.optim import ZeroRedundancyOptimizer
        from torch.nn.parallel import DistributedDataParallel

        from backends.torch import ALTO

        x, y = make_data()
        half = x.shape[0] // world_size
        x, y = x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half]

        for name in ("ddp", "fsdp2", "zero", "fsdp2_shard_norms"):
            try:
                model = make_model()
                if name == "ddp":
                    wrapped = DistributedDataParallel(model)
                    optimizer = ALTO(wrapped.parameters(), implementation="core", **OPTIMIZER_ARGS)
                elif name.startswith("fsdp2"):
                    from torch.distributed.device_mesh import init_device_mesh
                    from torch.distributed.fsdp import fully_shard

                    mesh = init_device_mesh("cpu", (world_size,))
                    for layer in model:
                        if isinstance(layer, torch.nn.Linear):
                            fully_shard(layer, mesh=mesh)
                    wrapped = fully_shard(model, mesh=mesh)
                    optimizer = ALTO(wrapped.parameters(), **OPTIMIZER_ARGS)  # "auto": DTensors take the core path
                else:
                    wrapped = DistributedDataParallel(model)
                    optimizer = ZeroRedundancyOptimizer(
                        wrapped.parameters(), optimizer_class=ALTO, implementation="core", **OPTIMIZER_ARGS
                    )
                if name == "fsdp2_shard_norms":
                    # Negative control: norms of the LOCAL shard (the mistake the trust ratio must avoid).
                    with _shard_norms():
                        train(wrapped, optimizer, x, y)
                else:
                    train(wrapped, optimizer, x, y)
                results[name] = [_full(p.detach()).clone() for p in model.parameters()]
                if name == "fsdp2":
                    results["fsdp2_param_types"] = sorted({type(p).__name__ for p in model.parameters()})
            except Exception:  # noqa: BLE001 - reported by the test
                results[f"{name}_error"] = traceback.format_exc()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
