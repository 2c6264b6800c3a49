"""E's state in checkpoints (issue 23 item 3, issue 26's versions).

- FSDP2 and ``torch.distributed.checkpoint`` (gloo on 127.0.0.1, CPU): E over torch's AdamW and SGD with momentum
  and over valley's ALTO and Lamb, and ALTO and Lamb alone, saved at step 3 with ``dcp.save`` by 2 processes and
  resumed in fresh processes: by 2 (the same bits as the uninterrupted run), by 1, and from 1 process to 2 (within
  1e-6 relative: the gradients are reduced in another order). Before issue 23 the DCP helpers dropped E's carry and
  ``set_optimizer_state_dict`` failed. The processes are forked where the platform allows (a spawned process
  imports torch again: several seconds each on a loaded machine).
- The same helpers in one process without FSDP (no process group needed).
- Checkpoints and pickles of the layout before issue 23 (commit d24396a; ``tests/torch/data``) load and give the
  same next steps; the 0.1.0 layout transcribed in the test too; ``"valley_version"`` is recorded.
"""

from __future__ import annotations

import io
import multiprocessing
import socket
import sys
from pathlib import Path

import dcp_worker
import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch_helpers import assert_same_state, clone_state, gradient_sequence, initial_params

import valley_core as vc
from backends.torch import ALTO, E, Lamb

E_ARGS = dict(alpha=-0.5, e_beta=0.5)
FIXTURE = Path(__file__).parent / "data" / "e_checkpoints_d24396a.pt"
BASES = {
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.01),
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9),
}


def distributed(test):
    """The marks of a test that reads the multi-process runs."""
    for mark in (
        pytest.mark.distributed,
        pytest.mark.timeout(300),
        pytest.mark.skipif(
            not dist.is_available() or not dist.is_gloo_available(),
            reason="torch.distributed with gloo is not available",
        ),
    ):
        test = mark(test)
    return test


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(world_size, out_dir, tag, train_too, sources):
    forks = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
    torch.multiprocessing.start_processes(
        dcp_worker.worker,
        args=(world_size, _free_port(), str(out_dir), tag, train_too, sources),
        nprocs=world_size,
        join=True,
        start_method="fork" if forks else "spawn",
    )
    return [torch.load(out_dir / f"{tag}_rank{rank}.pt", weights_only=False) for rank in range(world_size)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Per phase, per rank: what the worker found. Phase 1: 2 processes train and save (``ckpt_w2``). Phase 2: 1
    process resumes from ``ckpt_w2``, then trains and saves (``ckpt_w1``). Phase 3: 2 fresh processes resume from
    both."""
    out_dir = tmp_path_factory.mktemp("dcp")
    return {
        "w2": _run(2, out_dir, "w2", True, []),
        "w1": _run(1, out_dir, "w1", True, ["ckpt_w2"]),
        "resumed_w2": _run(2, out_dir, "resumed_w2", False, ["ckpt_w2", "ckpt_w1"]),
    }


def _no_errors(results, names=None):
    """No optimizer of ``names`` (default: all) raised in these processes."""
    for rank, found in enumerate(results):
        errors = [found[f"{name} error"] for name in names or NAMES if f"{name} error" in found]
        assert not errors, f"rank {rank}: " + "\n".join(errors)


NAMES = list(dcp_worker.OPTIMIZERS)


@distributed
@pytest.mark.parametrize("name", NAMES)
def test_resumed_by_as_many_processes_equals_the_uninterrupted_run_bit_for_bit(runs, name):
    for phase in runs.values():
        _no_errors(phase, [name])
    for rank, (uninterrupted, resumed) in enumerate(zip(runs["w2"], runs["resumed_w2"])):
        for index, (p, q) in enumerate(zip(resumed[f"{name} from ckpt_w2"], uninterrupted[name])):
            assert torch.equal(p, q), f"rank {rank}, parameter {index}: {(p - q).abs().max()}"


@distributed
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("source, resumed_by", [("w2", "w1"), ("w1", "resumed_w2")], ids=["2 to 1", "1 to 2"])
def test_resumed_by_another_number_of_processes_equals_the_uninterrupted_run(runs, name, source, resumed_by):
    for phase in runs.values():
        _no_errors(phase, [name])
    uninterrupted = runs[source][0][name]
    for rank, resumed in enumerate(runs[resumed_by]):
        for index, (p, q) in enumerate(zip(resumed[f"{name} from ckpt_{source}"], uninterrupted)):
            torch.testing.assert_close(
                p, q, rtol=1e-6, atol=1e-12, msg=lambda m: f"rank {rank}, parameter {index}: {m}"
            )


@distributed
def test_the_comparisons_would_catch_a_lost_carry_and_the_runs_moved(runs):
    # Negative control: the same resume with E's carry zeroed departs from the uninterrupted run by far more than
    # the tolerance above, so those comparisons do test E's carry.
    for phase in runs.values():
        _no_errors(phase)
    for source in ("w2", "w1"):
        lost = runs["resumed_w2"][0][f"E(AdamW) from ckpt_{source} without carry"]
        uninterrupted = runs[source][0]["E(AdamW)"]
        assert max(float(((p - q).abs() / q.abs().clamp_min(1e-3)).max()) for p, q in zip(lost, uninterrupted)) > 1e-4
    start = list(dcp_worker.make_model().parameters())
    for name in NAMES:
        assert max(float((p - q.detach()).abs().max()) for p, q in zip(runs["w2"][0][name], start)) > 1e-3, name


@distributed
def test_e_carry_is_saved_sharded_like_the_parameters(runs):
    _no_errors(runs["w2"])
    for name in ("E(AdamW)", "E(SGD momentum)", "E(ALTO)", "E(Lamb)"):
        keys = runs["w2"][0][f"{name} keys"]
        assert keys["model.0.weight"] == 2  # sharded over the 2 processes
        for fqn in ("0.weight", "0.bias", "2.weight", "2.bias"):
            assert keys[f"optimizer.state.{fqn}.e_carry"] == keys[f"model.{fqn}"], (name, fqn)
            assert f"optimizer.state.{fqn}.e_step" in keys, (name, sorted(keys))
    assert not any("e_carry" in key for key in runs["w2"][0]["ALTO keys"])


@distributed
def test_plain_tensors_for_dtensor_parameters_are_refused_naming_them(runs):
    """A ``torch.save`` checkpoint of a run without FSDP, loaded into FSDP2 parameters with ``load_state_dict``."""
    for phase in ("w2", "w1"):
        _no_errors(runs[phase], ["E(AdamW)", "ALTO"])
        for rank, found in enumerate(runs[phase]):
            assert "e_carry is a Tensor for a DTensor parameter" in found["E(AdamW) plain load"], rank
            assert "is a plain tensor for a DTensor parameter" in found["ALTO plain load"], rank


# ------------------------------------------------------------------------------ the DCP helpers in one process
@pytest.mark.parametrize(
    "make",
    [
        lambda ps: E(torch.optim.AdamW(ps, lr=1e-2), **E_ARGS),
        lambda ps: E(torch.optim.SGD(ps, lr=1e-2, momentum=0.9), **E_ARGS),
        lambda ps: E(ALTO(ps, lr=1e-2), **E_ARGS),
        lambda ps: E(Lamb(ps, lr=1e-2), **E_ARGS),
    ],
    ids=["adamw", "sgd", "alto", "lamb"],
)
@pytest.mark.parametrize("flatten", [False, True], ids=["nested", "flattened"])
def test_get_and_set_optimizer_state_dict_round_trip_e(make, flatten):
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(flatten_optimizer_state_dict=flatten)

    def model_and_optimizer():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
        return model, make(list(model.parameters()))

    def train(model, optimizer, steps):
        for step in steps:
            generator = torch.Generator().manual_seed(step)
            x = torch.randn(5, 3, generator=generator, dtype=torch.float64)
            y = torch.randn(5, 1, generator=generator, dtype=torch.float64)
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()

    model, optimizer = model_and_optimizer()
    train(model, optimizer, range(3))
    saved = get_optimizer_state_dict(model, optimizer, options=options)
    if flatten:
        assert saved["state.0.weight.e_step"] == 3 and "state.0.weight.e_carry" in saved
    else:
        assert saved["state"]["0.weight"]["e_step"] == 3 and "e_carry" in saved["state"]["0.weight"]
    saved = _save_load(saved)
    model_state = {key: value.clone() for key, value in model.state_dict().items()}
    train(model, optimizer, range(3, 6))
    resumed_model, resumed = model_and_optimizer()
    resumed_model.load_state_dict(model_state)
    set_optimizer_state_dict(resumed_model, resumed, saved, options=options)
    train(resumed_model, resumed, range(3, 6))
    for p, q in zip(resumed_model.parameters(), model.parameters()):
        assert torch.equal(p, q)
        assert torch.equal(resumed.state[p]["e_carry"], optimizer.state[q]["e_carry"])


# ------------------------------------------------------------------------------------------ today's layout
def _save_load(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _trained(make_base=BASES["adamw"], steps=3):
    params = [torch.nn.Parameter(p) for p in initial_params()]
    optimizer = E(make_base(params), **E_ARGS)
    for grads in gradient_sequence(steps):
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()
    return params, optimizer


def test_state_dict_layout_and_version():
    _, optimizer = _trained()
    state_dict = optimizer.state_dict()
    assert set(state_dict) == {"state", "param_groups", "e_adaptor", "valley_version"}
    assert state_dict["valley_version"] == vc.__version__
    assert state_dict["e_adaptor"] == {"alpha": -0.5, "e_beta": 0.5, "allow_unstable": False}
    assert sorted(state_dict["state"][0]) == ["e_carry", "e_step", "exp_avg", "exp_avg_sq", "step"]
    assert state_dict["state"][1]["e_step"] == 3
    fresh = E(BASES["adamw"]([torch.nn.Parameter(p) for p in initial_params()]), **E_ARGS)
    fresh.load_state_dict(_save_load(state_dict))
    assert fresh.checkpoint_version == vc.__version__


def test_a_state_dict_without_e_settings_keeps_e_hyperparameters_and_restores_the_carry():
    """What the DCP helpers hand over: ``"state"`` and ``"param_groups"`` only."""
    params, optimizer = _trained()
    state_dict = _save_load({key: optimizer.state_dict()[key] for key in ("state", "param_groups")})
    fresh = E(BASES["adamw"](params), alpha=-0.25, e_beta=0.5)
    assert fresh.checkpoint_version is None
    fresh.load_state_dict(state_dict)
    assert fresh.alpha == -0.25 and fresh.checkpoint_version == "0.1.0"  # a checkpoint that does not say
    assert_same_state(clone_state(optimizer), fresh.state)


def test_a_mismatched_carry_is_refused_and_nothing_changes():
    params, optimizer = _trained()
    before = clone_state(optimizer)
    state_dict = _save_load(optimizer.state_dict())
    state_dict["state"][0]["e_carry"] = torch.zeros(7)
    with pytest.raises(ValueError, match=r"parameter 0 \(shape \(4, 3\)\): e_carry has shape \(7,\), the parameter"):
        optimizer.load_state_dict(state_dict)
    del state_dict["state"][0]["e_carry"]
    with pytest.raises(ValueError, match=r"'e_carry' and 'e_step' come together, the state has only \['e_step'\]"):
        optimizer.load_state_dict(state_dict)
    state_dict = _save_load(optimizer.state_dict())
    state_dict["state"][2]["e_step"] = 2.5
    with pytest.raises(ValueError, match=r"e_step must be a non-negative int, got 2.5"):
        optimizer.load_state_dict(state_dict)
    plain = BASES["adamw"](params)  # a base optimizer's own state dict
    with pytest.raises(ValueError, match="no 'e_adaptor' entry and no parameter's state holds 'e_carry'"):
        optimizer.load_state_dict(plain.state_dict())
    assert_same_state(before, optimizer.state)


def _old_layout(state_dict):
    """A transcription of the layout before issue 23 (valley 0.1.0): E's state under ``"e_adaptor"`` by parameter
    position as ``{"EState.carry", "step"}``, the coefficient as ``"beta1"``, no ``"valley_version"``."""
    states = {}
    carries = {}
    for index, entry in state_dict["state"].items():
        states[index] = {k: v for k, v in entry.items() if k not in ("e_carry", "e_step")}
        carries[index] = {"EState.carry": entry["e_carry"], "step": entry["e_step"]}
    e = state_dict["e_adaptor"]
    return {
        "state": states,
        "param_groups": state_dict["param_groups"],
        "e_adaptor": {"alpha": e["alpha"], "beta1": e["e_beta"], "allow_unstable": False, "state": carries},
    }


def test_the_0_1_0_layout_loads_as_today_s():
    params, optimizer = _trained()
    fresh = E(BASES["adamw"](params), alpha=-0.1, e_beta=0.9)
    fresh.load_state_dict(_save_load(_old_layout(optimizer.state_dict())))
    assert (fresh.alpha, fresh.e_beta) == (-0.5, 0.5)
    assert_same_state(clone_state(optimizer), fresh.state)
    # That layout with a version of its own is not a checkpoint any valley wrote.
    mixed = {**_old_layout(optimizer.state_dict()), "valley_version": vc.__version__}
    with pytest.raises(ValueError, match=r"'e_adaptor' holds 'state' \(valley 0.1.0's layout\) in a checkpoint of"):
        fresh.load_state_dict(mixed)


def _transcribed_carries(grads_of_one_parameter, beta1):
    """E's carry after the given gradients, from the paper's two-buffer form (a_k and g_{k-1}), in float64:
    ``b_{k+1} = beta1 a_k - (1 - beta1) g_k``."""
    a = g_prev = 0.0
    for g in grads_of_one_parameter:
        g = np.asarray(g, dtype=np.float64)
        a = beta1 * a + (1 - beta1) * (g - g_prev)
        g_prev = g
    return beta1 * a - (1 - beta1) * g_prev


@pytest.mark.parametrize("implementation", ["fused", "core"])
@pytest.mark.parametrize("base", list(BASES))
def test_a_checkpoint_of_d24396a_loads_and_gives_the_same_next_steps(base, implementation):
    saved = torch.load(FIXTURE, weights_only=False)[base]
    assert "state" in saved["state_dict"]["e_adaptor"]  # the old layout
    params = [torch.nn.Parameter(p.clone()) for p in saved["params_after_3"]]
    resumed = E(BASES[base](params), implementation=implementation, **saved["e_args"])
    resumed.load_state_dict(saved["state_dict"])
    # The carries it restored are the paper's (an independent transcription over the fixture's gradients).
    for index, p in enumerate(params):
        grads = [step[index].numpy() for step in saved["grads"][:3] if step[index] is not None]
        expected = _transcribed_carries(grads, 0.5)
        np.testing.assert_allclose(resumed.state[p]["e_carry"].numpy(), expected, rtol=1e-12, atol=1e-15)
        assert resumed.state[p]["e_step"] == len(grads)
    for k, grads in enumerate(saved["grads"][3:]):
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.clone()
        resumed.step()
        if k == 0:  # the next step equals d24396a's own next step, bit for bit
            assert all(torch.equal(p, q) for p, q in zip(params, saved["params_after_4"]))
    # Uninterrupted with today's code, all 6 steps.
    uninterrupted_params = [torch.nn.Parameter(p.clone()) for p in saved["start"]]
    uninterrupted = E(BASES[base](uninterrupted_params), implementation=implementation, **saved["e_args"])
    for grads in saved["grads"]:
        for p, g in zip(uninterrupted_params, grads):
            p.grad = None if g is None else g.clone()
        uninterrupted.step()
    for p, q in zip(params, uninterrupted_params):
        assert torch.equal(p, q)
        assert resumed.state[p].keys() == uninterrupted.state[q].keys()
        for key, value in resumed.state[p].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(uninterrupted.state[q][key])), key


@pytest.mark.parametrize("base", list(BASES))
def test_a_pickle_of_d24396a_loads_and_gives_the_same_next_step(base):
    saved = torch.load(FIXTURE, weights_only=False)[base]
    pickled = torch.load(io.BytesIO(saved["pickled_after_3"]), weights_only=False)
    params, optimizer = pickled["params"], pickled["optimizer"]
    assert optimizer.state is optimizer.base_optimizer.state
    assert [optimizer.state[p]["e_step"] for p in params] == [3, 2]
    for p, g in zip(params, saved["grads"][3]):
        p.grad = g.clone()
    optimizer.step()
    assert all(torch.equal(p, q) for p, q in zip(params, saved["params_after_4"]))
