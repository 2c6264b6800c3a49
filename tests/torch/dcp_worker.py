"""The body of the distributed-checkpoint tests (``test_torch_dcp.py``): runs in each spawned process (gloo on
127.0.0.1, CPU), with the model sharded by FSDP2 (``fully_shard``) over all the processes (1 or 2).

For every optimizer of :data:`OPTIMIZERS`: the uninterrupted run trains a tiny float64 model for :data:`BEFORE`
steps, saves model and optimizer with ``torch.distributed.checkpoint`` (the state dicts of
``torch.distributed.checkpoint.state_dict.get_state_dict``: what an FSDP2 user saves), trains :data:`AFTER` more
steps and keeps the final full parameters; a resumed run builds a fresh model and optimizer, loads a checkpoint
(``dcp.load``, then ``set_state_dict``) and trains the :data:`AFTER` steps. Each process writes what it found to
``OUT/<tag>_rank<r>.pt``; the test compares.
"""

from __future__ import annotations

import os
import traceback
from typing import Any, Callable, Dict

import torch
import torch.distributed as dist

BEFORE, AFTER = 3, 3
BATCH = 8


def _e(make_base: Callable[[Any], torch.optim.Optimizer]) -> Callable[[Any], torch.optim.Optimizer]:
    def make(params: Any) -> torch.optim.Optimizer:
        from backends.torch import E

        return E(make_base(params), alpha=-0.5, e_beta=0.5)

    return make


def _alto(params: Any) -> torch.optim.Optimizer:
    from backends.torch import ALTO

    return ALTO(params, lr=0.02, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=1e-2)


def _lamb(params: Any) -> torch.optim.Optimizer:
    from backends.torch import Lamb

    return Lamb(params, lr=0.02, weight_decay=1e-2)


#: name -> constructor over the model's parameters. E over torch's optimizers and over valley's classes, and the
#: valley classes alone (their state must round-trip too).
OPTIMIZERS: Dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "E(AdamW)": _e(lambda ps: torch.optim.AdamW(ps, lr=0.02, weight_decay=1e-2)),
    "E(SGD momentum)": _e(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)),
    "E(ALTO)": _e(_alto),
    "E(Lamb)": _e(_lamb),
    "ALTO": _alto,
    "Lamb": _lamb,
}


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()


def batch(step: int, rank: int, world_size: int):
    """Step ``step``'s batch (another one at every step), this rank's equal share of it."""
    generator = torch.Generator().manual_seed(100 + step)
    x = torch.randn(BATCH, 6, generator=generator, dtype=torch.float64)
    y = torch.randn(BATCH, 1, generator=generator, dtype=torch.float64)
    share = BATCH // world_size
    return x[rank * share : (rank + 1) * share], y[rank * share : (rank + 1) * share]


def sharded_model(world_size: int) -> torch.nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = make_model()
    mesh = init_device_mesh("cpu", (world_size,))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def train(model, optimizer, steps: range, rank: int, world_size: int) -> None:
    for step in steps:
        x, y = batch(step, rank, world_size)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def full_parameters(model) -> list:
    from torch.distributed.tensor import DTensor

    return [(p.full_tensor() if isinstance(p, DTensor) else p).detach().clone() for p in model.parameters()]


def save(model, optimizer, path: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=path)


def load(model, optimizer, path: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def saved_keys(path: str) -> Dict[str, int]:
    """Every key of the checkpoint with its number of saved chunks (1 for a value that is not a tensor)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = dcp.FileSystemReader(path).read_metadata().state_dict_metadata
    return {
        key: len(value.chunks) if isinstance(value, TensorStorageMetadata) else 1 for key, value in metadata.items()
    }


def plain_load_refusal(optimizer) -> str:
    """What ``load_state_dict`` says of a state dict whose buffers are plain full tensors (``torch.save`` of a run
    without FSDP) for DTensor parameters; empty if it loaded."""
    from torch.distributed.tensor import DTensor

    state_dict = optimizer.state_dict()
    for entry in state_dict["state"].values():
        for key, value in entry.items():
            if isinstance(value, DTensor):
                entry[key] = value.full_tensor()
    try:
        optimizer.load_state_dict(state_dict)
    except ValueError as error:
        return str(error)
    return ""


def worker(rank: int, world_size: int, port: int, out_dir: str, tag: str, train_too: bool, sources: list) -> None:
    """Resumes from each checkpoint folder named in ``sources`` (``"ckpt_w2"`` ...), then, with ``train_too``, makes
    the uninterrupted runs and this world size's checkpoints (``OUT/ckpt_w<world size>/<name>``). Writes
    ``OUT/<tag>_rank<rank>.pt``."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    results: Dict[str, Any] = {}
    try:
        for name, make in OPTIMIZERS.items():
            try:
                for source in sources:
                    for control in (False, True) if name == "E(AdamW)" else (False,):
                        model = sharded_model(world_size)
                        optimizer = make(list(model.parameters()))
                        load(model, optimizer, os.path.join(out_dir, source, name))
                        if control:  # negative control: E's carry lost at resume (as with DCP before issue 23)
                            for entry in optimizer.state.values():
                                entry["e_carry"].zero_()
                        train(model, optimizer, range(BEFORE, BEFORE + AFTER), rank, world_size)
                        results[f"{name} from {source}{' without carry' if control else ''}"] = full_parameters(model)
                if train_too:
                    model = sharded_model(world_size)
                    optimizer = make(list(model.parameters()))
                    train(model, optimizer, range(BEFORE), rank, world_size)
                    path = os.path.join(out_dir, f"ckpt_w{world_size}", name)
                    save(model, optimizer, path)
                    train(model, optimizer, range(BEFORE, BEFORE + AFTER), rank, world_size)
                    results[name] = full_parameters(model)
                    results[f"{name} keys"] = saved_keys(path)
                    if name in ("E(AdamW)", "ALTO"):
                        results[f"{name} plain load"] = plain_load_refusal(optimizer)
            except Exception:  # noqa: BLE001 - reported by the test
                results[f"{name} error"] = traceback.format_exc()
        torch.save(results, os.path.join(out_dir, f"{tag}_rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
