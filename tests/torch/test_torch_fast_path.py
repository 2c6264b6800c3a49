"""The compiled fast path beyond the table's parity (``tests/torch/test_torch_table.py``): what ``"auto"`` and
``"compiled"`` do where there is no kernel, compilation failures mid-step, the recompile limit.

See ``backends/torch/compiled.py``.
"""

from __future__ import annotations

import pytest
import torch
from torch_helpers import assert_matches_core, build, gradient_sequence, initial_params, run_core, run_optimizer

from backends.torch import ALTO, ESGD, EAdam, Lamb
from tests.optimizers import BY_ID

ALTO_CASE = BY_ID["alto_decay"]


def test_auto_uses_the_core_where_there_is_no_kernel_and_compiled_refuses():
    params = [torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))]
    params[0].grad = torch.ones(3, dtype=torch.bfloat16)
    ALTO(params, implementation="auto").step()  # bfloat16: core path, no error
    EAdam([torch.nn.Parameter(torch.ones(3))], implementation="auto")
    with pytest.raises(RuntimeError, match="cannot run this group: dtype torch.bfloat16"):
        ALTO(params, implementation="compiled").step()


# ----------------------------------------------------------------------------------- compilation failures
#: Tensors of several elements first (their chunks run first), then 1-element tensors, whose chunks need
#: kernels of their own: with the recompile limit at 0 those fail to compile in the middle of a step.
FAILURE_SHAPES = [(4, 3), (5,), (2, 3, 2), (7,), (6,), (), (1,)]


def _run_with_failing_compilation(implementation, steps=12):
    import warnings

    from torch._dynamo import config as dynamo_config

    from backends.torch import compiled

    grads = gradient_sequence(steps, shapes=FAILURE_SHAPES, seed=5)
    start = initial_params(FAILURE_SHAPES, seed=4)
    # The kernels for tensors of several elements exist (compiled on other tensors of the same configuration).
    run_optimizer(
        lambda ps: build(ALTO_CASE, ps, "compiled"),
        [[torch.ones(3, dtype=torch.float64)]],
        params=[torch.ones(3, dtype=torch.float64)],
    )
    params = [torch.nn.Parameter(p.clone()) for p in start]
    optimizer = build(ALTO_CASE, params, implementation)
    errors = []
    single_keys = [k for k in compiled._compiled if len(k) > 4 and k[4] is True]
    for key in single_keys:  # make sure the 1-element kernels have to be compiled (and fail)
        del compiled._compiled[key]
    with dynamo_config.patch(recompile_limit=0), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for grads_k in grads:
            for p, g in zip(params, grads_k):
                p.grad = g.clone()
            try:
                optimizer.step()
            except RuntimeError as error:
                errors.append(str(error))
    core_params, core_state = run_core(ALTO_CASE.make(), grads, params=start)
    assert_matches_core(optimizer, params, core_params, core_state, rtol=1e-11, atol=1e-13)
    return optimizer, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)], errors


def _without_fused_kernels(monkeypatch):
    """ "auto" prefers the fused CPU kernels; a compiler that does not exist makes them unavailable (really: the
    build fails), so that "auto" takes the compiled path as it does where the fused kernels cannot run."""
    monkeypatch.setenv("VALLEY_CXX", "/nonexistent/valley-test-c++")


def test_a_recompile_limit_hit_mid_step_never_leaves_a_half_written_step_auto(monkeypatch):
    _without_fused_kernels(monkeypatch)
    optimizer, warned, errors = _run_with_failing_compilation("auto")
    assert not errors
    assert any("fused CPU kernels could not be built" in w and "VALLEY_CXX" in w for w in warned)
    warned = [w for w in warned if "fused CPU kernels" not in w]
    assert len(warned) == 1 and "FailOnRecompileLimitHit" in warned[0] and "later steps use the core" in warned[0]
    assert "FailOnRecompileLimitHit" in optimizer.dispatcher.failed["compiled"]


def test_a_recompile_limit_hit_mid_step_never_leaves_a_half_written_step_compiled():
    _, _, errors = _run_with_failing_compilation("compiled")
    assert errors and all("FailOnRecompileLimitHit" in e and "parameters and state are consistent" in e for e in errors)


def test_a_second_pass_that_fails_to_compile_does_not_repeat_the_first(monkeypatch):
    from torch._dynamo.exc import FailOnRecompileLimitHit

    from backends.torch import compiled

    grads = gradient_sequence(6)
    kernel = compiled._kernel
    calls = {"second": 0}

    def failing_kernel(plan, index, key):
        function = kernel(plan, index, key)
        if index != 1:  # the plan's second pass (after the norms)
            return function

        def second(*args):
            calls["second"] += 1
            if calls["second"] == 4:  # step 4: the first pass has run, the second cannot compile
                raise FailOnRecompileLimitHit("simulated")
            return function(*args)

        return second

    monkeypatch.setattr(compiled, "_kernel", failing_kernel)
    _without_fused_kernels(monkeypatch)
    with pytest.warns(RuntimeWarning, match="simulated"):
        params, optimizer = run_optimizer(lambda ps: build(ALTO_CASE, ps, "auto"), grads)
    core_params, core_state = run_core(ALTO_CASE.make(), grads)
    assert_matches_core(optimizer, params, core_params, core_state, rtol=1e-11, atol=1e-13)


def test_many_configurations_in_one_process_do_not_hit_the_recompile_limit():
    """dtypes x optimizers (x trust ratio) x layouts (0-d, 1-element, mixed) in one process: no recompile limit hit
    (each configuration has its own compiled code; lr and the step count are data, not constants)."""
    import itertools
    import warnings

    layouts = [[(3,), (4, 2)], [(), (1,), (5,)], [(2, 2), (3,), (), (9,)], [(6,)] * 9, [(1, 1), (0,), (8,)]]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        configurations = [(cls, {"trust_ratio": trust}) for cls in (ALTO, Lamb) for trust in (True, False)]
        configurations += [(EAdam, {}), (ESGD, {})]
        for dtype, (cls, options), layout in itertools.product([torch.float32, torch.float64], configurations, layouts):
            params = [torch.nn.Parameter(torch.ones(shape, dtype=dtype)) for shape in layout]
            optimizer = cls(params, implementation="compiled", lr=0.01, **options)
            for k in range(3):
                for p in params:
                    p.grad = torch.full_like(p, 0.1 * (k + 1))
                optimizer.param_groups[0]["lr"] = 0.01 / (k + 1)
                optimizer.step()
            assert all(torch.isfinite(p).all() for p in params)
