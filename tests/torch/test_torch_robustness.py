"""Dtypes, autocast + GradScaler, non-finite gradients, sparse gradients, validation, closures, E's gradients."""

from __future__ import annotations

import pytest
import torch
from torch_helpers import assert_same_state, clone_state, gradient_sequence, initial_params, run_core

import valley_core as vc
from backends.torch import ALTO, ESGD, E, EAdam, EAdamW, Lamb

ALTO_ARGS = dict(lr=0.02, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_state_dtype_and_one_step_for_every_dtype(dtype):
    params = [torch.nn.Parameter(p.to(dtype)) for p in initial_params()]
    grads = [g.to(dtype) for g in gradient_sequence(1)[0]]
    start = [p.detach().clone() for p in params]
    optimizer = ALTO(params, implementation="core", **ALTO_ARGS)
    for p, g in zip(params, grads):
        p.grad = g
    optimizer.step()
    state_dtype = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype
    for p in params:
        assert p.dtype == dtype
        for key in ("EState.carry", "AdamState.first", "AdamState.second"):
            assert optimizer.state[p][key].dtype == state_dtype
    # The same step computed by the core in the state dtype, then rounded to the parameter dtype.
    expected, _ = run_core(
        vc.alto(**ALTO_ARGS), [[g.to(state_dtype) for g in grads]], params=[p.to(state_dtype) for p in start]
    )
    for p, q in zip(params, expected):
        assert torch.equal(p.detach(), q.to(dtype))


def test_alto_state_is_at_most_three_times_the_parameter_bytes():
    params = [torch.nn.Parameter(torch.zeros(64, 64)) for _ in range(3)]
    optimizer = ALTO(params, implementation="core")
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    buffers = sum(
        v.numel() * v.element_size()
        for s in optimizer.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor) and v.dim() > 0
    )
    assert buffers == 3 * sum(p.numel() * p.element_size() for p in params)


def _tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def test_autocast_with_grad_scaler_skips_inf_steps_without_touching_state():
    model = _tiny_model()
    optimizer = ALTO(model.parameters(), implementation="core", **ALTO_ARGS)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    for step in range(4):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        if step == 2:
            next(model.parameters()).grad[0, 0] = float("inf")
            params_before = [p.detach().clone() for p in model.parameters()]
            state_before = clone_state(optimizer)
            scale_before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        if step == 2:
            assert scaler.get_scale() < scale_before
            assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params_before))
            assert_same_state(state_before, optimizer.state)
    assert all(s["step"] == 3 for s in optimizer.state.values())


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: ALTO(ps, implementation="core", skip_nonfinite=True),
        lambda ps: EAdamW(ps, implementation="core", skip_nonfinite=True),
        lambda ps: E(torch.optim.Adam(ps), skip_nonfinite=True),
    ],
    ids=["alto", "eadamw", "e_adam"],
)
def test_skip_nonfinite_skips_the_whole_step_atomically(make):
    params = [torch.nn.Parameter(p) for p in initial_params()]
    optimizer = make(params)
    for gs in gradient_sequence(2):
        for p, g in zip(params, gs):
            p.grad = g.clone()
        optimizer.step()
    before_params = [p.detach().clone() for p in params]
    before_state = clone_state(optimizer)
    base_before = clone_state(optimizer.base_optimizer) if isinstance(optimizer, E) else None
    for p, g in zip(params, gradient_sequence(1)[0]):
        p.grad = g.clone()
    params[2].grad[0, 0, 1] = float("nan")
    optimizer.step()
    assert optimizer.skipped_steps == 1
    assert all(torch.equal(p, q) for p, q in zip(params, before_params))
    assert_same_state(before_state, optimizer.state)
    if base_before is not None:
        assert_same_state(base_before, optimizer.base_optimizer.state)


@pytest.mark.parametrize(
    "make",
    [lambda ps: ALTO(ps, implementation="core"), lambda ps: E(torch.optim.SGD(ps, lr=0.1))],
    ids=["alto", "e_sgd"],
)
def test_sparse_gradients_raise_a_clear_error_and_change_nothing(make):
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    optimizer = make(embedding.parameters())
    embedding(torch.tensor([1, 2])).sum().backward()
    before = embedding.weight.detach().clone()
    with pytest.raises(RuntimeError, match="does not support sparse gradients.*sparse=False"):
        optimizer.step()
    assert torch.equal(embedding.weight, before)
    assert not optimizer.state


def test_hyperparameters_are_validated_by_the_core_at_construction_and_add_param_group():
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match=r"alpha=-5.0 violates \|alpha\| < 1/\(1-beta1\) = 1.11 for beta1=0.1"):
        ALTO(params, alpha=-5.0, betas=(0.1, 0.9, 0.99))
    ALTO(params, alpha=-5.0, betas=(0.1, 0.9, 0.99), allow_unstable=True)
    with pytest.raises(ValueError, match=r"lr=-1.0 violates lr >= 0"):
        EAdam(params, lr=-1.0)
    with pytest.raises(ValueError, match=r"betas=\(0.9,\) violates betas is a sequence of 2 numbers"):
        ESGD(params, betas=(0.9,))
    optimizer = Lamb(params)
    with pytest.raises(ValueError, match=r"param group 1: weight_decay=-0.1 violates weight_decay >= 0"):
        optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3))], "weight_decay": -0.1})
    with pytest.raises(ValueError, match="trust_ratio='yes' violates trust_ratio is a bool"):
        optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3))], "trust_ratio": "yes"})
    assert len(optimizer.param_groups) == 1
    with pytest.raises(TypeError, match="unknown hyperparameters"):
        ALTO(params, momentum=0.9)
    with pytest.raises(ValueError, match=r"alpha=3.0 violates \|alpha\|"):
        E(torch.optim.SGD(params, lr=0.1), alpha=3.0, beta1=0.5)


def test_a_hyperparameter_changed_between_steps_is_validated_before_anything_moves():
    params = [torch.nn.Parameter(torch.ones(2))]
    optimizer = ALTO(params, implementation="core")
    params[0].grad = torch.ones(2)
    optimizer.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr=-1.0 violates lr >= 0"):
        optimizer.step()
    assert torch.equal(params[0].detach(), torch.ones(2)) and not optimizer.state


def test_positional_hyperparameters_follow_the_core_signature():
    optimizer = ALTO([torch.nn.Parameter(torch.zeros(2))], 0.5, -1.0)
    assert optimizer.defaults["lr"] == 0.5 and optimizer.defaults["alpha"] == -1.0
    # torch keys (issue 13.1): the moments in `betas` as for torch.optim.Adam, the E adaptor's beta1 in `e_beta`.
    assert ALTO.hyperparameter_names()[:3] == ("lr", "alpha", "betas")
    assert ALTO.hyperparameter_defaults()["betas"] == (0.9, 0.99)
    assert ALTO.hyperparameter_defaults()["e_beta"] == 0.99


def test_closure_and_zero_grad():
    model = _tiny_model()
    optimizer = ALTO(model.parameters(), implementation="core", **ALTO_ARGS)
    x, y = torch.randn(8, 4), torch.randn(8, 1)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    losses = [float(optimizer.step(closure)) for _ in range(30)]
    assert losses[-1] < losses[0]
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_e_wrapper_leaves_the_users_gradients_untouched_and_shares_param_groups():
    params = [torch.nn.Parameter(p) for p in initial_params()]
    base = torch.optim.Adam(params, lr=1e-2)
    optimizer = E(base, alpha=-0.5, beta1=0.5)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for gs in gradient_sequence(3):
        grads = [g.clone() for g in gs]
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()
        scheduler.step()
        for p, g, original in zip(params, grads, gs):
            assert p.grad is g
            assert torch.equal(p.grad, original)
    assert base.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**3)
    extra = torch.nn.Parameter(torch.zeros(2))
    optimizer.add_param_group({"params": [extra]})
    assert len(base.param_groups) == 2 and optimizer.param_groups is base.param_groups


def test_e_wrapper_on_bfloat16_keeps_a_float32_carry():
    params = [torch.nn.Parameter(p.to(torch.bfloat16)) for p in initial_params()]
    optimizer = E(torch.optim.SGD(params, lr=1e-2), alpha=-0.5, beta1=0.5)
    for p, g in zip(params, gradient_sequence(1)[0]):
        p.grad = g.to(torch.bfloat16)
    optimizer.step()
    assert all(optimizer.state[p]["e_carry"].dtype == torch.float32 for p in params)
    assert all(p.grad.dtype == torch.bfloat16 for p in params)


def test_tiny_model_trains_with_every_optimizer():
    for make in (
        lambda ps: ALTO(ps, lr=5e-2, implementation="core"),
        lambda ps: EAdam(ps, lr=1e-2),
        lambda ps: ESGD(ps, lr=1e-2),
        lambda ps: E(torch.optim.AdamW(ps, lr=1e-2), alpha=0.5, beta1=0.01),
    ):
        model = _tiny_model()
        optimizer = make(model.parameters())
        x = torch.randn(32, 4)
        y = x.sum(dim=1, keepdim=True)
        first = None
        for _ in range(60):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            first = float(loss) if first is None else first
        assert float(loss) < 0.5 * first


def test_an_lr_scheduler_does_not_grow_the_optimizer_caches():
    """Validation and the execution plan are cached per hyperparameter setting; a scheduler makes a new setting at
    every step, and the caches stay bounded (and a new lr is still validated: a negative one is refused)."""
    from backends.torch import ALTO
    from backends.torch import valley_optimizer as optimizer_module

    params = [torch.nn.Parameter(torch.ones(4))]
    optimizer = ALTO(params, lr=0.01)
    layouts_before = len(optimizer_module._PLANS.get(type(optimizer).factory, {}))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    for _ in range(300):
        params[0].grad = torch.full((4,), 0.1)
        optimizer.step()
        scheduler.step()
    factory = type(optimizer).factory
    assert len(optimizer_module._VALID_GROUPS[factory]) <= optimizer_module._CACHE_SIZE
    # one new plan at most: the plan does not depend on lr's value
    assert len(optimizer_module._PLANS[factory]) <= layouts_before + 1
    optimizer.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        optimizer.step()


# ------------------------------------------------------------------ torch's protocols (issues 23.6 and 26.15)
def _maximize_case(implementation, steps=6):
    """``maximize=True`` on gradients ``g`` against the core chain on ``-g`` (minimising the negated loss)."""
    from torch_helpers import assert_matches_core, run_optimizer

    grads = gradient_sequence(steps)
    params, optimizer = run_optimizer(
        lambda ps: ALTO(ps, implementation=implementation, maximize=True, **ALTO_ARGS), grads
    )
    core_params, core_state = run_core(vc.alto(**ALTO_ARGS), [[-g for g in gs] for gs in grads])
    assert_matches_core(optimizer, params, core_params, core_state, rtol=1e-11, atol=1e-13)
    return params


@pytest.mark.parametrize("implementation", ["core", "fused", "compiled"])
def test_maximize_is_minimising_the_negated_loss_on_every_executor(implementation):
    params = _maximize_case(implementation)
    assert all(torch.isfinite(p).all() for p in params)


def test_maximize_under_torch_compile_is_minimising_the_negated_loss():
    from torch_helpers import assert_matches_core

    torch._dynamo.reset()
    grads = gradient_sequence(4)
    params = [torch.nn.Parameter(p.clone()) for p in initial_params()]
    optimizer = ALTO(params, maximize=True, **ALTO_ARGS)
    step = torch.compile(optimizer.step, fullgraph=True, backend="aot_eager")
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        step()
    core_params, core_state = run_core(vc.alto(**ALTO_ARGS), [[-g for g in gs] for gs in grads])
    assert_matches_core(optimizer, params, core_params, core_state, rtol=1e-11, atol=1e-13)
    torch._dynamo.reset()


def test_maximize_is_a_group_setting_checked_like_the_others():
    p = torch.nn.Parameter(torch.ones(2))
    assert ALTO([p]).param_groups[0]["maximize"] is False
    with pytest.raises(ValueError, match="maximize=1 violates maximize is a bool"):
        ALTO([p], maximize=1)
    # The plan negates the gradient once, as its first statement (documented in backends.kernels.plan.derive).
    optimizer = ALTO([p], maximize=True)
    plan = optimizer.plan_for(optimizer.param_groups[0])
    negations = [s for sweep in plan.passes for s in sweep.statements if s.op == "neg" and s.operands == ("grad",)]
    assert len(negations) == 1


@pytest.mark.parametrize(
    "flag, instead",
    [
        ("foreach", "implementation= picks"),
        ("fused", "use implementation='fused'"),
        ("capturable", r"compile the step instead: torch.compile\(optimizer.step\)"),
        ("differentiable", "differentiate through the core's functional update"),
    ],
)
def test_torch_implementation_flags_are_refused_with_what_to_use_instead(flag, instead):
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=rf"^ALTO\({flag}=True\) is not supported: {instead}"):
        ALTO([p], **{flag: True})
    for default in (None, False):  # torch's defaults mean nothing here and are accepted
        ALTO([p], **{flag: default})


@pytest.mark.parametrize("cls", [ALTO, Lamb, EAdam, EAdamW, ESGD])
def test_params_none_gets_the_hyperparameters_value_error_first(cls):
    """Issue 26.15: torch's error-input protocol builds optimizers with ``params=None``."""
    with pytest.raises(ValueError, match="lr=-0.01 violates lr >= 0"):
        cls(None, lr=-0.01)
    with pytest.raises(ValueError, match="weight_decay=-1.0 violates weight_decay >= 0"):
        cls(None, weight_decay=-1.0)
    with pytest.raises(TypeError):  # valid hyperparameters: torch's own complaint about params
        cls(None)


def test_a_tensor_lr_must_hold_one_element_in_torchs_words():
    p = torch.nn.Parameter(torch.ones(2))
    for shape in [(2,), (1, 2), (0,)]:
        with pytest.raises(ValueError, match=r"Tensor lr must be 1-element \(got shape"):
            ALTO([p], lr=torch.full(shape, 0.01))
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        ALTO(None, lr=torch.tensor([0.1, 0.2]))
    # One element of any shape is a learning rate, as in torch.
    for lr in (torch.tensor(0.01), torch.tensor([0.01]), torch.tensor([[0.01]])):
        optimizer = ALTO([p], lr=lr, implementation="core")
        p.grad = torch.ones(2)
        optimizer.step()
