"""The NumPy reference adapter: in-place steps, checkpoints, validation."""

from __future__ import annotations

import numpy as np
import pytest

import valley_core as vc
from backends import numpy as vnp
from tests.core import transcription as golden
from tests.core.helpers import (
    CORRUPT_CHECKPOINTS,
    assert_resume_equals_uninterrupted,
    assert_takes_the_step_0_1_0_took,
    legacy_0_1_0_case,
)


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, 4)), rng.normal(size=(5,))], golden.drifting_gradients([(3, 4), (5,)], 40, seed)


def test_step_updates_the_callers_arrays_in_place_and_matches_the_transcription():
    params, grads = _problem()
    start = [p.copy() for p in params]
    opt = vnp.ALTO(params, lr=1e-2, alpha=-5.0, betas=(0.99, 0.9, 0.99))
    ids = [id(p) for p in params]
    for step_grads in grads:
        assert opt.step(step_grads) is True
    expected, _ = golden.alto(start, grads, 1e-2, -5.0, (0.99, 0.9, 0.99), 1e-6, 1e-4, 1e-6, 1e-10, True)
    assert [id(p) for p in opt.params] == ids
    for actual, want in zip(params, expected):
        np.testing.assert_allclose(actual, want, rtol=1e-12)


@pytest.mark.parametrize(
    "cls", [vnp.ALTO, vnp.ALTOVanilla, vnp.Lamb, vnp.EAdam, vnp.Adam, vnp.EAdamW, vnp.AdamW, vnp.ESGD, vnp.SGD]
)
def test_resume_from_state_dict_equals_uninterrupted_run(cls):
    params, grads = _problem(1)
    assert len(grads) == 40
    assert_resume_equals_uninterrupted(cls, params, grads, split=20)


def test_state_dict_is_a_copy():
    params, grads = _problem()
    opt = vnp.ALTO(params)
    opt.step(grads[0])
    checkpoint = opt.state_dict()
    before = {k: v.copy() for k, v in checkpoint["state"].items()}
    opt.step(grads[1])
    for key, value in checkpoint["state"].items():
        np.testing.assert_array_equal(value, before[key])


def _assert_state_unchanged(opt, snapshot):
    for key, value in vc.state_to_dict(opt.state).items():
        np.testing.assert_array_equal(value, snapshot[key], err_msg=key)


@pytest.mark.parametrize("corrupt,pattern", CORRUPT_CHECKPOINTS)
def test_mismatched_checkpoint_raises_and_changes_nothing(corrupt, pattern):
    params, grads = _problem()
    source = vnp.ALTO([p.copy() for p in params])
    for g in grads[:5]:
        source.step(g)
    checkpoint = source.state_dict()
    corrupt(checkpoint)
    target = vnp.ALTO([p.copy() for p in params])
    target.step(grads[0])
    snapshot = {k: np.array(v, copy=True) for k, v in vc.state_to_dict(target.state).items()}
    with pytest.raises(ValueError, match=pattern):
        target.load_state_dict(checkpoint)
    _assert_state_unchanged(target, snapshot)
    assert target.steps_taken == 1


def test_bad_gradients_are_rejected_before_anything_changes():
    params, grads = _problem()
    opt = vnp.ALTO(params)
    before = [p.copy() for p in params]
    with pytest.raises(ValueError, match=r"got 1 gradients for 2 parameters"):
        opt.step(grads[0][:1])
    with pytest.raises(ValueError, match=r"grads\[1\] has shape \(4,\), its parameter has shape \(5,\)"):
        opt.step([grads[0][0], np.zeros(4)])
    with pytest.raises(TypeError, match=r"grads\[0\] has dtype float32, its parameter has dtype float64"):
        opt.step([grads[0][0].astype(np.float32), grads[0][1]])
    with pytest.raises(TypeError, match=r"grads\[0\] is a list, expected a numpy.ndarray"):
        opt.step([[1.0], grads[0][1]])
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    assert opt.steps_taken == 0


def test_bad_parameters_are_rejected():
    with pytest.raises(TypeError, match=r"params\[0\] has dtype int64; only floating arrays"):
        vnp.ALTO([np.arange(3)])
    with pytest.raises(ValueError, match="params is empty"):
        vnp.ALTO([])
    frozen = np.ones(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\] is read-only"):
        vnp.ALTO([frozen])
    with pytest.raises(ValueError, match=r"alpha=-5\.0 violates"):
        vnp.ALTO([np.ones(3)], betas=(0.1, 0.9, 0.99))


def test_skip_nonfinite_skips_atomically():
    params, grads = _problem()
    opt = vnp.ALTO(params, skip_nonfinite=True)
    opt.step(grads[0])
    before = [p.copy() for p in params]
    snapshot = {k: np.array(v, copy=True) for k, v in vc.state_to_dict(opt.state).items()}
    bad = [grads[1][0].copy(), grads[1][1].copy()]
    bad[1][2] = np.nan
    assert opt.step(bad) is False
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    _assert_state_unchanged(opt, snapshot)
    assert opt.step(grads[1]) is True


def test_float32_parameters_keep_float32():
    params = [np.ones(4, dtype=np.float32)]
    opt = vnp.EAdam(params)
    opt.step([np.full(4, 0.5, dtype=np.float32)])
    assert params[0].dtype == np.float32
    assert all(v.dtype == np.float32 for k, v in vc.state_to_dict(opt.state).items() if not k.endswith("count"))


def test_float16_parameters_keep_float32_state_and_round_each_step():
    # eps=1e-8 is 0 in float16 and v underflows: with float16 state one EAdam step gave -inf.
    rng = np.random.default_rng(0)
    start = np.array([0.5, -0.25, 1e-3, 2.0], dtype=np.float16)
    grads = [(1e-4 * rng.normal(size=4)).astype(np.float16) for _ in range(5)]
    params = [start.copy()]
    opt = vnp.EAdam(params, lr=1e-2)
    for g in grads:
        opt.step([g])
    assert params[0].dtype == np.float16 and np.all(np.isfinite(params[0]))
    assert all(v.dtype == np.float32 for k, v in vc.state_to_dict(opt.state).items() if not k.endswith("count"))
    expected = _float16_policy_reference(start, grads)
    np.testing.assert_array_equal(params[0], expected)


def _float16_policy_reference(start, grads):
    """The core run on float32 copies, the parameter rounded to float16 after each step (straight from the policy)."""
    transform = vc.eadam(lr=1e-2)
    theta = start.astype(np.float32)
    state = transform.init((theta,))
    for g in grads:
        updates, state = transform.update((g.astype(np.float32),), state, (theta,))
        theta = (theta + updates[0]).astype(np.float16).astype(np.float32)
    return theta.astype(np.float16)


@pytest.mark.parametrize("steps_taken", ["three", 1.5, -1, None, True])
def test_checkpoint_with_a_bad_step_count_raises_and_changes_nothing(steps_taken):
    params, grads = _problem()
    source = vnp.ALTO([p.copy() for p in params])
    for g in grads[:5]:
        source.step(g)
    checkpoint = source.state_dict()
    checkpoint["steps_taken"] = steps_taken
    target = vnp.ALTO([p.copy() for p in params])
    target.step(grads[0])
    snapshot = {k: np.array(v, copy=True) for k, v in vc.state_to_dict(target.state).items()}
    with pytest.raises(ValueError, match=r"steps_taken"):
        target.load_state_dict(checkpoint)
    _assert_state_unchanged(target, snapshot)
    assert target.steps_taken == 1


def test_checkpoint_step_count_may_be_a_numpy_integer():
    params, grads = _problem()
    source = vnp.ALTO([p.copy() for p in params])
    source.step(grads[0])
    checkpoint = source.state_dict()
    checkpoint["steps_taken"] = np.array(1, dtype=np.int64)
    target = vnp.ALTO([p.copy() for p in params])
    target.load_state_dict(checkpoint)
    assert target.steps_taken == 1 and type(target.steps_taken) is int


@pytest.mark.parametrize(
    "name,make",
    [
        ("numpy.ALTO", lambda p: vnp.ALTO(p, lr=1e-2, alpha=-2.0, betas=(0.9, 0.9, 0.99), weight_decay=1e-3)),
        ("numpy.AdamCM", lambda p: vnp.AdamCM(p, lr=1e-2, top_c=2)),
        ("numpy.ESGD", lambda p: vnp.ESGD(p, lr=1e-2, alpha=0.5, betas=(0.01, 0.9))),
    ],
)
def test_checkpoints_of_0_1_0_load_and_take_the_step_that_code_took(name, make):
    """valley 0.1.0's ``state_dict()`` (with the adapter's own ``steps_taken``), written by that code
    (``tests/core/data/make_legacy_fixtures.py``): the next step gives the parameters it computed."""
    opt = assert_takes_the_step_0_1_0_took(name, make)
    assert "steps_taken" not in opt.state_dict()


def test_checkpoints_record_the_version_that_wrote_them():
    """Issue 26 item 14: a checkpoint says which valley (and so which layout) wrote it."""
    params, grads = _problem()
    source = vnp.ALTO([p.copy() for p in params])
    source.step(grads[0])
    checkpoint = source.state_dict()
    assert checkpoint["valley_version"] == vc.__version__
    target = vnp.ALTO([p.copy() for p in params])
    assert target.checkpoint_version is None
    target.load_state_dict(checkpoint)
    assert target.checkpoint_version == vc.__version__
    with pytest.raises(ValueError, match=r"valley_version=2 is not a version string"):
        target.load_state_dict(dict(checkpoint, valley_version=2))


def test_the_step_count_is_the_core_states_and_nothing_else():
    """No counter beside the core's: the count (and the bias correction it drives) follows the state."""
    params, grads = _problem()
    opt = vnp.ALTO([p.copy() for p in params])
    assert "steps_taken" not in vars(opt)
    checkpoint = opt.state_dict()
    assert sorted(checkpoint) == ["optimizer", "state", "valley_version"]
    for key in checkpoint["state"]:
        if key.endswith(".count"):
            checkpoint["state"][key] = np.array(7, dtype=np.int32)
    opt.load_state_dict(checkpoint)
    assert opt.steps_taken == 7
    opt.step(grads[0])
    assert opt.steps_taken == 8
    # The same step from a core state at count 7: k = 8 in the bias corrections.
    transform = vc.alto()
    state = transform.init(tuple(params))
    state = vc.state_from_dict(state, checkpoint["state"])
    updates, _ = transform.update(tuple(grads[0]), state, tuple(params))
    for actual, expected in zip(opt.params, vc.apply_updates(tuple(params), updates)):
        np.testing.assert_array_equal(actual, expected)


def test_a_0_1_0_step_count_that_disagrees_with_the_state_is_refused():
    case = legacy_0_1_0_case("numpy.ALTO")
    checkpoint = dict(case["state_dict"], steps_taken=4)
    opt = vnp.ALTO([p.copy() for p in case["params"]], lr=1e-2, alpha=-2.0, betas=(0.9, 0.9, 0.99), weight_decay=1e-3)
    with pytest.raises(ValueError, match=r"state_dict\['steps_taken'\]=4 does not match the state's step count 5"):
        opt.load_state_dict(checkpoint)
    assert opt.steps_taken == 0
