"""``E(base_optimizer)`` and torch's optimizer protocols (issue 23 item 6, issue 26 item 2).

- torch's global step hooks fire once per ``E.step`` (they fired for E and again for the base optimizer);
  per-instance hooks of E and of the base fire once each.
- ``state_dict``/``load_state_dict`` pass non-parameter entries of ``optimizer.state`` through as torch does (E
  raised ``KeyError``).
- ``maximize=True`` of the base: E over a maximizing base is E over the minimizing base on ``-f``.
- A base that skipped its step (``skip_nonfinite=True`` and a NaN gradient) leaves E's carry and step count as they
  were (E stored a NaN carry, and every later step was skipped).
- ``E.state`` is the base's state, E's entries beside the base's.
- E's plan on the compiled executor (issue 27): equal to the core path, a compilation failing mid-step.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.optim.optimizer as torch_optimizer
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch_helpers import gradient_sequence, initial_params

from backends.torch import ALTO, E

E_ARGS = dict(alpha=-0.5, e_beta=0.5)
IMPLEMENTATIONS = ["fused", "compiled", "core"]


def _params(dtype=torch.float64):
    return [torch.nn.Parameter(p.to(dtype)) for p in initial_params()]


def _step(optimizer, params, grads):
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.clone().to(p.dtype)
    return optimizer.step()


# ----------------------------------------------------------------------------------------- step hooks
def test_global_step_hooks_fire_once_per_step_for_e():
    params = _params()
    optimizer = E(torch.optim.AdamW(params, lr=1e-2), **E_ARGS)
    calls = []
    pre = register_optimizer_step_pre_hook(lambda opt, args, kwargs: calls.append(("pre", type(opt).__name__)))
    post = register_optimizer_step_post_hook(lambda opt, args, kwargs: calls.append(("post", type(opt).__name__)))
    try:
        for grads in gradient_sequence(3):
            _step(optimizer, params, grads)
    finally:
        pre.remove()
        post.remove()
    assert calls == [("pre", "E"), ("post", "E")] * 3


def test_global_step_hooks_stay_registered_and_fire_for_other_optimizers():
    params = _params()
    optimizer = E(torch.optim.SGD(params, lr=1e-2, momentum=0.9), **E_ARGS)
    plain = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    calls = []
    first = register_optimizer_step_pre_hook(lambda opt, args, kwargs: calls.append(("first", type(opt).__name__)))
    second = register_optimizer_step_post_hook(lambda opt, args, kwargs: calls.append(("second", type(opt).__name__)))
    try:
        _step(optimizer, params, gradient_sequence(1)[0])
        plain.param_groups[0]["params"][0].grad = torch.ones(2)
        plain.step()
    finally:
        first.remove()
        second.remove()
    assert calls == [("first", "E"), ("second", "E"), ("first", "SGD"), ("second", "SGD")]
    assert not torch_optimizer._global_optimizer_pre_hooks  # removed by their handles, nothing left behind
    assert not torch_optimizer._global_optimizer_post_hooks


def test_instance_step_hooks_of_e_and_of_the_base_fire_once_each():
    params = _params()
    base = torch.optim.Adam(params, lr=1e-2)
    optimizer = E(base, **E_ARGS)
    calls = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append("E pre"))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append("E post"))
    base.register_step_pre_hook(lambda opt, args, kwargs: calls.append("base pre"))
    base.register_step_post_hook(lambda opt, args, kwargs: calls.append("base post"))
    _step(optimizer, params, gradient_sequence(1)[0])
    assert calls == ["E pre", "base pre", "base post", "E post"]


def test_a_closure_passed_to_e_is_evaluated_once_and_its_loss_returned():
    params = _params()
    optimizer = E(torch.optim.SGD(params, lr=1e-2), **E_ARGS)
    evaluations = []

    def closure():
        evaluations.append(1)
        optimizer.zero_grad()
        loss = sum((p**2).sum() for p in params)
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert len(evaluations) == 1 and isinstance(loss, torch.Tensor)


# ----------------------------------------------------------------------------------- non-tensor state keys
def _note_hook(optimizer):
    optimizer.state["note"] = {"written by": "a state-dict pre-hook"}


def test_state_dict_passes_non_parameter_state_entries_through_as_torch_does():
    params = _params()
    optimizer = E(torch.optim.AdamW(params, lr=1e-2), **E_ARGS)
    optimizer.register_state_dict_pre_hook(_note_hook)
    reference_params = _params()
    reference = torch.optim.AdamW(reference_params, lr=1e-2)  # torch's own behaviour, the oracle
    reference.register_state_dict_pre_hook(_note_hook)
    for grads in gradient_sequence(2):
        _step(optimizer, params, grads)
        _step(reference, reference_params, grads)
    state_dict = optimizer.state_dict()
    assert (
        state_dict["state"]["note"]
        == reference.state_dict()["state"]["note"]
        == {"written by": "a state-dict pre-hook"}
    )
    fresh = E(torch.optim.AdamW(_params(), lr=1e-2), **E_ARGS)
    fresh_reference = torch.optim.AdamW(_params(), lr=1e-2)
    fresh.load_state_dict(state_dict)
    fresh_reference.load_state_dict(reference.state_dict())
    assert fresh.state["note"] == fresh_reference.state["note"]


# ------------------------------------------------------------------------------------------------ maximize
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    "make_base",
    [
        lambda ps, **kw: torch.optim.AdamW(ps, lr=1e-2, weight_decay=1e-2, **kw),
        lambda ps, **kw: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, **kw),
    ],
    ids=["adamw", "sgd"],
)
def test_e_over_a_maximizing_base_is_e_over_the_minimizing_base_on_minus_f(make_base, implementation):
    """The base negates the adapted gradient, which is linear in the gradients: ``-g~(g) = g~(-g)``. So E (which
    negates nothing) over ``maximize=True`` takes the steps E over the minimizing base takes on ``-f``, bit for bit
    (negation is exact), with the carry of opposite sign."""
    maximizing_params, minimizing_params = _params(torch.float32), _params(torch.float32)
    maximizing = E(make_base(maximizing_params, maximize=True), implementation=implementation, **E_ARGS)
    minimizing = E(make_base(minimizing_params), implementation=implementation, **E_ARGS)
    for grads in gradient_sequence(6):
        _step(maximizing, maximizing_params, grads)
        _step(minimizing, minimizing_params, [-g for g in grads])
    for p, q in zip(maximizing_params, minimizing_params):
        assert torch.equal(p, q)
        assert torch.equal(maximizing.state[p]["e_carry"], -minimizing.state[q]["e_carry"])
    assert not torch.equal(maximizing_params[0], _params(torch.float32)[0])  # it moved


# ----------------------------------------------------------------------------------- a base that skips steps
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_a_step_the_base_skipped_leaves_e_state_untouched(implementation):
    """E(ALTO(skip_nonfinite=True)): a NaN gradient makes ALTO skip; E must not store the NaN carry (it did, and
    every later step was skipped). The run equals one that never saw the bad step."""
    grads = gradient_sequence(6, dtype=torch.float32)
    bad = [g.clone() for g in grads[2]]
    bad[1][0] = float("nan")
    params, clean_params = _params(torch.float32), _params(torch.float32)
    optimizer = E(ALTO(params, lr=1e-2, skip_nonfinite=True), implementation=implementation, **E_ARGS)
    clean = E(ALTO(clean_params, lr=1e-2, skip_nonfinite=True), implementation=implementation, **E_ARGS)
    for k, step_grads in enumerate(grads):
        if k == 2:
            before = {p: (optimizer.state[p]["e_carry"].clone(), optimizer.state[p]["e_step"]) for p in params}
            _step(optimizer, params, bad)
            assert optimizer.base_optimizer.skipped_steps == 1 and optimizer.skipped_steps == 1
            for p in params:
                assert torch.equal(optimizer.state[p]["e_carry"], before[p][0])
                assert optimizer.state[p]["e_step"] == before[p][1]
        _step(optimizer, params, step_grads)
        _step(clean, clean_params, step_grads)
    assert optimizer.skipped_steps == 1 and optimizer.base_optimizer.skipped_steps == 1
    for p, q in zip(params, clean_params):
        assert torch.isfinite(p).all()
        assert torch.equal(p, q)
        assert torch.equal(optimizer.state[p]["e_carry"], clean.state[q]["e_carry"])
        assert optimizer.state[p]["e_step"] == clean.state[q]["e_step"] == 6


def test_e_own_skip_nonfinite_skips_before_the_base():
    params = _params()
    optimizer = E(ALTO(params, lr=1e-2), skip_nonfinite=True, **E_ARGS)
    grads = gradient_sequence(1)[0]
    grads[0] = grads[0].clone()
    grads[0][0, 0] = float("inf")
    _step(optimizer, params, grads)
    assert optimizer.skipped_steps == 1 and optimizer.base_optimizer.skipped_steps == 0
    assert not optimizer.state


# ---------------------------------------------------------------------------------------------- state layout
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_e_state_is_the_base_state_with_e_entries_beside_the_base_entries(implementation):
    params = _params()
    base = torch.optim.AdamW(params, lr=1e-2)
    optimizer = E(base, implementation=implementation, **E_ARGS)
    for k, grads in enumerate(gradient_sequence(3)):
        _step(optimizer, params, [None if (index == 1 and k == 0) else g for index, g in enumerate(grads)])
    assert optimizer.state is base.state
    assert sorted(optimizer.state[params[0]]) == ["e_carry", "e_step", "exp_avg", "exp_avg_sq", "step"]
    assert [optimizer.state[p]["e_step"] for p in params] == [3, 2, 3]
    # Still the base's state after the base loads a state dict by itself (torch replaces the dict).
    base.load_state_dict(base.state_dict())
    assert optimizer.state is base.state and "e_carry" in optimizer.state[params[0]]
    duplicate = copy.deepcopy(optimizer)
    assert duplicate.state is duplicate.base_optimizer.state
    assert torch.equal(
        duplicate.state[duplicate.param_groups[0]["params"][0]]["e_carry"], base.state[params[0]]["e_carry"]
    )


def test_e_entries_alone_in_a_parameter_state_do_not_stop_the_base_from_initialising():
    """torch's optimizers create their state when ``state[p]`` is empty; E's entries alone there (a stateless base's
    checkpoint, say) are set aside while the base steps, so AdamW still initialises."""
    params = _params()
    optimizer = E(torch.optim.AdamW(params, lr=1e-2), **E_ARGS)
    reference_params = _params()
    reference = E(torch.optim.AdamW(reference_params, lr=1e-2), **E_ARGS)
    for p in params:
        optimizer.state[p].update({"e_carry": torch.zeros_like(p), "e_step": 0})
    for grads in gradient_sequence(2):
        _step(optimizer, params, grads)
        _step(reference, reference_params, grads)
    for p, q in zip(params, reference_params):
        assert torch.equal(p, q)
        assert sorted(optimizer.state[p]) == sorted(reference.state[q])


@pytest.mark.parametrize("base", ["adamw", "alto"])
def test_compiled_e_step_stops_compiling_after_its_first_steps(base: str) -> None:
    """Issue 23 item 4 for E: ``torch.compile(E.step)`` under an LR scheduler compiles while the state is created,
    then never again (E's step count was a Python int that Dynamo guarded on: a new graph at every step until the
    recompile limit); the compiled steps equal the eager ones."""
    from torch._dynamo.utils import counters

    def make(params: list) -> E:
        lr = torch.tensor(1e-2, dtype=torch.float64)
        inner = torch.optim.AdamW(params, lr=lr) if base == "adamw" else ALTO(params, lr=lr)
        return E(inner, alpha=-0.5, e_beta=0.5)

    def run(compiled: bool) -> tuple:
        torch.manual_seed(0)
        weight = torch.nn.Parameter(torch.randn(8, 4, dtype=torch.float64))
        bias = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
        optimizer = make([weight, bias])
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer.base_optimizer, step_size=5, gamma=0.5)
        step = torch.compile(optimizer.step, backend="aot_eager") if compiled else optimizer.step
        graphs = []
        for _ in range(50):
            weight.grad, bias.grad = torch.randn_like(weight), torch.randn_like(bias)
            step()
            scheduler.step()
            graphs.append(counters["stats"]["unique_graphs"])
        return weight.detach().clone(), optimizer.state[weight]["e_carry"].clone(), graphs

    torch._dynamo.reset()
    counters.clear()
    weight, carry, graphs = run(compiled=True)
    assert graphs[2] == graphs[-1], graphs  # no graph after the third step
    eager_weight, eager_carry, _ = run(compiled=False)
    # E's carry follows the gradients alone: equal whatever the base. The parameters are compared where the
    # base's compiled step equals its eager one (valley's; torch's compiled AdamW differs from its eager step by
    # about 5e-7 in float64 here, without E too).
    torch.testing.assert_close(carry, eager_carry, rtol=1e-10, atol=1e-12)
    if base == "alto":
        torch.testing.assert_close(weight, eager_weight, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- E's plan on every executor
@pytest.mark.parametrize(
    "implementation,dtype,base",
    [("fused", torch.float64, "adam"), ("fused", torch.float32, "adam"), ("fused", torch.float64, "sgd")]
    + [("fused", torch.float32, "sgd"), ("compiled", torch.float64, "adam")],
)
def test_e_executors_equal_its_core_path(implementation, dtype, base):
    """E's plan on the fused kernels (bit for bit) and on ``torch.compile`` of its passes (the CPU here; to
    round-off) against the core executor: the parameters, the base's state, E's carry and step, with a schedule for
    alpha, a parameter that misses its gradient at some steps (its steps differ), an empty and a one-element
    tensor."""
    from torch_helpers import SHAPES

    import valley_core as vc

    shapes = [*SHAPES, (0, 3), (1,)]
    grads = gradient_sequence(30, shapes=shapes, seed=4, dtype=dtype)
    start = initial_params(shapes, seed=5, dtype=dtype)
    runs = []
    for chosen in (implementation, "core"):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        inner = torch.optim.Adam(params, lr=0.01) if base == "adam" else torch.optim.SGD(params, lr=0.01, momentum=0.9)
        optimizer = E(inner, alpha=vc.exponential_decay(-0.5, 0.98), beta1=0.5, implementation=chosen)
        for k, grads_k in enumerate(grads):
            for index, (p, g) in enumerate(zip(params, grads_k)):
                p.grad = None if (index == 1 and k % 4 == 0) else g.clone()
            kept = [p.grad for p in params]
            optimizer.step()
            assert all(p.grad is g for p, g in zip(params, kept))  # the user's gradients are put back
        runs.append((params, optimizer))
    (ours, ours_opt), (core, core_opt) = runs
    assert not ours_opt.dispatcher.failed

    def same(actual, expected):
        if implementation == "fused":
            assert torch.equal(torch.as_tensor(actual), torch.as_tensor(expected))
        else:
            torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-14)

    for p, q in zip(ours, core):
        same(p, q)
        same(ours_opt.state[p]["e_carry"], core_opt.state[q]["e_carry"])
        assert int(ours_opt.state[p]["e_step"]) == int(core_opt.state[q]["e_step"])
        for key, value in core_opt.base_optimizer.state[q].items():
            if key not in ("e_carry", "e_step"):
                same(ours_opt.base_optimizer.state[p][key], value)


def test_e_compiled_refuses_bfloat16():
    half = [torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))]
    half[0].grad = torch.ones(3, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match=r"E\(implementation='compiled'\) cannot adapt .* float32/float64"):
        E(torch.optim.SGD(half, lr=0.1), implementation="compiled").step()


@pytest.mark.parametrize("implementation", ["compiled", "auto"])
def test_e_compilation_failing_mid_step_completes_the_step_then_reports(monkeypatch, implementation):
    """A pass that cannot compile in the middle of E's step: the step is completed eagerly by the same functions
    (the base steps, E's carry and step count move, ``p.grad`` is the user's again), then an explicit
    ``"compiled"`` raises and ``"auto"`` warns and uses the core path from then on. Equal to the core throughout."""
    from torch._dynamo.exc import FailOnRecompileLimitHit

    from backends.torch import compiled

    kernel, calls = compiled._kernel, []

    def failing_kernel(plan, index, key):
        calls.append(key)
        if len(calls) == 2:
            raise FailOnRecompileLimitHit("simulated")
        return kernel(plan, index, key)

    monkeypatch.setattr(compiled, "_kernel", failing_kernel)
    monkeypatch.setenv("VALLEY_CXX", "/nonexistent/valley-test-c++")  # "auto": no fused kernels, compiled next
    shapes = [(4, 3), (5,), (2, 3, 2), (3,), (2, 2), (6,)]  # two chunks of the compiled pass: fails at the second
    params, core_params = ([torch.nn.Parameter(p) for p in initial_params(shapes)] for _ in range(2))
    optimizer = E(torch.optim.SGD(params, lr=0.1), **E_ARGS, implementation=implementation)
    core = E(torch.optim.SGD(core_params, lr=0.1), **E_ARGS, implementation="core")
    for k, grads in enumerate(gradient_sequence(4, shapes=shapes)):
        if k == 0:
            with (
                pytest.raises(RuntimeError, match="simulated")
                if implementation == "compiled"
                else pytest.warns(RuntimeWarning, match="simulated.*later steps use the core path")
            ):
                _step(optimizer, params, grads)
            assert all(torch.equal(p.grad, g) for p, g in zip(params, grads))
        else:
            _step(optimizer, params, grads)
        _step(core, core_params, grads)
    assert implementation == "compiled" or "simulated" in optimizer.dispatcher.failed["compiled"]
    for p, q in zip(params, core_params):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(optimizer.state[p]["e_carry"], core.state[q]["e_carry"], rtol=1e-12, atol=1e-14)
        assert int(optimizer.state[p]["e_step"]) == 4
