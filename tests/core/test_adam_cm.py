"""Adam+CM against an independent float64 transcription of the authors' reference (chandar-lab/CMOptimizer).

Every Adam+CM and EAdam+CM record of ``tests/optimizers.py`` runs against the oracle on every namespace; what
is particular to Adam+CM (its buffer's first step, kappa = 0, float32 state, its hyperparameters' rules) too.

The oracle below is written from ``Adam_CM.step`` (cmoptimizer/optim.py) and ``TensorList``
(cmoptimizer/prioritydict.py) in their own form: a Python object per tensor holding the heap, the keys, a
RUNNING sum ``aggr_sum``, ``curr_k`` and the (possibly stale) ``smallest`` index, the branches taken with
Python ``if``, the random draw of ``critical_test`` made with a real random number generator. It shares no
code with ``valley_core`` and is never produced by it.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import valley_core as vc
from tests.core.helpers import relative_error, run_core, to_numpy
from tests.optimizers import BY_ID, cases

TOLERANCE = 1e-10


# --- the oracle: a transcription of the reference -------------------------------------------------------


class TensorListTranscription:
    """``cmoptimizer.prioritydict.TensorList`` (the methods Adam_CM uses), NumPy float64."""

    def __init__(self, decay_rate, k):
        self.k, self.curr_k, self.decay_rate = k, 0, decay_rate
        self.aggr_sum, self.smallest = None, 0

    def size(self):
        return self.curr_k

    def is_full(self):
        return self.curr_k == self.k

    def add_item(self, key, val):
        if self.k == 0:
            return
        if self.is_full():
            self.aggr_sum = self.aggr_sum - self._heap[self.smallest]
            self._heap_key[self.smallest] = key
            self._heap[self.smallest] = val
        else:
            if self.curr_k == 0:
                self._heap_key = np.zeros(self.k)
                self._heap = np.zeros((self.k, *val.shape))
            self._heap_key[self.curr_k] = key
            self._heap[self.curr_k] = val
            self.curr_k += 1
        if self.aggr_sum is None:
            self.aggr_sum = np.zeros_like(val)
        self.aggr_sum = self.aggr_sum + val

    def poke_smallest(self):
        self.smallest = int(np.argmin(self._heap_key))
        return self._heap_key[self.smallest]

    def decay(self):
        self._heap_key = self._heap_key * self.decay_rate


class AdamCMTranscription:
    """``cmoptimizer.optim.Adam_CM`` (one param group, ``amsgrad=False``), NumPy float64.

    ``kappa`` multiplies the buffer mean (the reference has no multiplier: ``kappa=1`` is the reference;
    the multiplier is valley's documented extension and is only exercised with ``kappa != 1`` on purpose).
    """

    def __init__(self, params, lr, betas, eps, weight_decay, top_c, decay, kappa, synced, critical_test, seed=0):
        self.params = [np.array(p, dtype=np.float64) for p in params]
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.top_c, self.decay_rate, self.kappa = top_c, decay, kappa
        self.synced, self.critical_test = synced, critical_test
        self.state = [dict() for _ in self.params]
        self.rng = np.random.default_rng(seed)
        self.offline = {"yes": 0, "no": 0}

    def step(self, grads):
        grad_norm = 0.0
        if self.synced:
            for g in grads:
                grad_norm += np.sqrt(np.sum(np.square(g)))
        beta1, beta2 = self.betas
        for i, g in enumerate(grads):
            p = self.params[i]
            if self.weight_decay != 0:
                p = p * (1 - self.lr * self.weight_decay)
            if not self.synced:
                grad_norm = np.linalg.norm(g)
            state = self.state[i]
            if len(state) == 0 or "critical gradients" not in state or state["critical gradients"].size() == 0:
                state["step"] = 0
                state["exp_avg"] = np.zeros_like(p)
                exp_avg = state["exp_avg"]
                state["exp_avg_sq"] = np.zeros_like(p)
                state["critical gradients"] = TensorListTranscription(self.decay_rate, self.top_c)
                state["critical gradients"].add_item(grad_norm, np.array(g, copy=True))
            else:
                state["exp_avg"] = state["exp_avg"] * beta1 + (1 - beta1) * g
                exp_avg = state["exp_avg"]
                buffer = state["critical gradients"]
                aggr_mean = buffer.aggr_sum / buffer.size()
                aggr_grad = exp_avg + self.kappa * aggr_mean
                if buffer.is_full():
                    if self.rng.uniform() >= self.critical_test:
                        if grad_norm > buffer.poke_smallest():
                            self.offline["yes"] += 1
                            buffer.add_item(grad_norm, np.array(exp_avg, copy=True))
                        else:
                            self.offline["no"] += 1
                    else:
                        self.offline["yes"] += 1
                        buffer.add_item(grad_norm, np.array(exp_avg, copy=True))
                else:
                    buffer.add_item(grad_norm, np.array(exp_avg, copy=True))
                exp_avg = aggr_grad
            state["step"] += 1
            bias_correction1 = 1 - beta1 ** state["step"]
            bias_correction2 = 1 - beta2 ** state["step"]
            state["exp_avg_sq"] = state["exp_avg_sq"] * beta2 + (1 - beta2) * exp_avg * exp_avg
            denom = np.sqrt(state["exp_avg_sq"]) / np.sqrt(bias_correction2) + self.eps
            step_size = self.lr / bias_correction1
            state["critical gradients"].decay()
            self.params[i] = p - step_size * exp_avg / denom


def e_adaptor_transcription(grads_sequence, alpha, beta1):
    """The E adaptor in its direct two-buffer form: ``a_k = beta1 a + (1-beta1)(g_k - g_{k-1})``, ``g + alpha a``."""
    previous = [np.zeros_like(g) for g in grads_sequence[0]]
    ema = [np.zeros_like(g) for g in grads_sequence[0]]
    adapted = []
    for grads in grads_sequence:
        ema = [beta1 * a + (1 - beta1) * (g - gp) for a, g, gp in zip(ema, grads, previous)]
        adapted.append([g + alpha * a for g, a in zip(grads, ema)])
        previous = grads
    return adapted


# --- data ----------------------------------------------------------------------------------------------

SHAPES = [(3,), (), (2, 3)]


def _params(seed=3):
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.normal(size=s)) for s in SHAPES]


def _grads(steps=40, seed=11):
    """Gradients whose norms vary over two decades, so that the buffer both admits and rejects."""
    rng = np.random.default_rng(seed)
    return [[np.asarray(rng.normal(size=s) * 10.0 ** rng.uniform(-1, 1)) for s in SHAPES] for _ in range(steps)]


def _core_cm_state(state):
    return next(s for s in state if isinstance(s, vc.CriticalMomentaState))


def _reference_hyperparameters(case):
    """The record's hyperparameters completed by the factory's defaults, in the reference's names (no alpha)."""
    defaults = {k: p.default for k, p in inspect.signature(vc.OPTIMIZERS[case.name]).parameters.items()}
    hp = {k: v for k, v in {**defaults, **case.hyperparameters}.items() if k not in ("alpha", "allow_unstable")}
    hp.pop("weight_decay_mask")
    return hp


@pytest.mark.parametrize("case", cases("numpy", where=lambda c: c.name == "adam_cm"))
def test_core_matches_the_reference_transcription(xp, case):
    hp = _reference_hyperparameters(case)
    grads = _grads()
    oracle = AdamCMTranscription(_params(), **hp)
    for step in grads:
        oracle.step(step)
    params, state = run_core(case.make(), _params(), grads, xp)
    cm = _core_cm_state(state)
    for i in range(len(SHAPES)):
        reference = oracle.state[i]
        buffer = reference["critical gradients"]
        assert relative_error(params[i], oracle.params[i]) <= TOLERANCE, f"param {i}"
        assert relative_error(cm.first[i], reference["exp_avg"]) <= TOLERANCE, f"m {i}"
        assert relative_error(cm.second[i], reference["exp_avg_sq"]) <= TOLERANCE, f"v {i}"
        assert relative_error(cm.buffer[i], buffer._heap) <= TOLERANCE, f"buffer {i}"
        assert relative_error(cm.priorities[i], buffer._heap_key) <= TOLERANCE, f"priorities {i}"
    assert int(to_numpy(cm.count)) == len(grads)
    if hp["critical_test"] == 0.0 and hp["top_c"] > 1:
        # the case exercised both outcomes of the priority test (per tensor: counted once per tensor)
        assert oracle.offline["yes"] > 0 and oracle.offline["no"] > 0, oracle.offline


def test_closed_loop_trajectory_matches_the_reference():
    """Gradients computed from each implementation's own iterate (a non-convex function), 150 steps."""

    def gradient(params):
        return [2 * 0.3 * p + np.cos(3 * p) * 3 for p in params]

    hp = dict(_reference_hyperparameters(BY_ID["adam_cm_reference"]), lr=5e-2, weight_decay=1e-3)
    oracle = AdamCMTranscription(_params(5), **hp)
    transform = vc.adam_cm(**hp)
    params = tuple(_params(5))
    state = transform.init(params)
    for _ in range(150):
        oracle.step(gradient(oracle.params))
        updates, state = transform.update(tuple(gradient(params)), state, params)
        params = vc.apply_updates(params, updates)
    for mine, theirs in zip(params, oracle.params):
        assert relative_error(mine, theirs) <= 1e-9


def test_first_step_stores_the_gradient_and_does_not_move():
    params = _params()
    grads = _grads(1)[0]
    transform = vc.adam_cm(lr=0.1, top_c=3)
    state = transform.init(tuple(params))
    updates, state = transform.update(tuple(grads), state, tuple(params))
    cm = _core_cm_state(state)
    norm_sum = sum(np.linalg.norm(g) for g in grads)
    for i, g in enumerate(grads):
        assert not np.any(updates[i])
        assert not np.any(cm.first[i]) and not np.any(cm.second[i])
        np.testing.assert_array_equal(cm.buffer[i][0], g)
        assert not np.any(cm.buffer[i][1:])
        np.testing.assert_allclose(cm.priorities[i], [0.7 * norm_sum, 0.0, 0.0], rtol=1e-15)


@pytest.mark.parametrize("weight_decay, base", [(0.0, vc.adam), (1e-2, vc.adamw)])
def test_kappa_zero_is_adam_exactly(xp, weight_decay, base):
    grads = _grads(25)
    hp = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=weight_decay)
    mine, _ = run_core(vc.adam_cm(kappa=0.0, top_c=3, **hp), _params(), grads, xp)
    theirs, _ = run_core(base(**hp), _params(), grads, xp)
    for a, b in zip(mine, theirs):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_kappa_positive_differs_from_adam():
    grads = _grads(10)
    mine, _ = run_core(vc.adam_cm(lr=1e-2), _params(), grads, np)
    theirs, _ = run_core(vc.adam(lr=1e-2), _params(), grads, np)
    assert max(relative_error(a, b) for a, b in zip(mine, theirs)) > 1e-3


@pytest.mark.parametrize("case", cases("numpy", where=lambda c: c.name == "eadam_cm"))
def test_eadam_cm_is_the_e_adaptor_in_front_of_the_reference(xp, case):
    hp = _reference_hyperparameters(case)
    grads = _grads(30)
    beta_e, *betas = hp["betas"]
    oracle = AdamCMTranscription(_params(), **{**hp, "betas": tuple(betas)})
    for step in e_adaptor_transcription(grads, case.hyperparameters["alpha"], beta_e):
        oracle.step(step)
    params, _ = run_core(case.make(), _params(), grads, xp)
    for mine, theirs in zip(params, oracle.params):
        assert relative_error(mine, theirs) <= TOLERANCE


def test_float32_state_stays_float32(xp):
    params = tuple(xp.asarray(p.astype(np.float32)) for p in _params())
    transform = vc.adam_cm(lr=1e-2, top_c=2)
    state = transform.init(params)
    for grads in _grads(6):
        updates, state = transform.update(tuple(xp.asarray(g.astype(np.float32)) for g in grads), state, params)
        params = vc.apply_updates(params, updates)
    for key, value in vc.state_to_dict(state).items():
        if not key.endswith(".count"):
            assert str(value.dtype).endswith("float32"), key
    assert all(str(p.dtype).endswith("float32") for p in params)


def test_numpy_backend_checkpoint_layout_and_a_mismatched_buffer():
    """Resume == uninterrupted is the table's generic test; here the buffer's checkpoint layout."""
    from backends.numpy import AdamCM

    case = BY_ID["adam_cm"]
    first = AdamCM([p.copy() for p in _params()], **case.hyperparameters)
    for step in _grads(13):
        first.step(step)
    checkpoint = first.state_dict()
    assert checkpoint["optimizer"] == "adam_cm"
    assert checkpoint["state"]["CriticalMomentaState.buffer.2"].shape == (case.hyperparameters["top_c"], 2, 3)
    other = AdamCM([p.copy() for p in _params()], lr=1e-2, top_c=4)
    with pytest.raises(ValueError, match=r"CriticalMomentaState\.buffer\.0: shape \(3, 3\) does not match"):
        other.load_state_dict(checkpoint)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(top_c=0), r"^top_c=0 violates top_c is an integer >= 1$"),
        (dict(top_c=2.5), r"^top_c=2\.5 violates top_c is an integer >= 1$"),
        (dict(top_c=True), r"^top_c=True violates top_c is an integer >= 1$"),
        (dict(decay=1.5), r"^decay=1\.5 violates 0 <= decay <= 1$"),
        (dict(decay=-0.1), r"^decay=-0\.1 violates 0 <= decay <= 1$"),
        (dict(kappa=-1.0), r"^kappa=-1\.0 violates kappa >= 0$"),
        (dict(kappa=float("nan")), r"^kappa=nan violates kappa is finite$"),
        (dict(critical_test=0.5), r"^critical_test=0\.5 violates critical_test is 0\.0 \(priority replacement\)"),
        (dict(synced="yes"), r"^synced='yes' violates synced is a bool$"),
        (dict(betas=(0.9, 1.0)), r"^beta2=1\.0 violates 0 <= beta2 < 1$"),
        (dict(lr=-1.0), r"^lr=-1\.0 violates lr >= 0$"),
    ],
)
def test_invalid_hyperparameters_name_parameter_value_and_rule(kwargs, message):
    with pytest.raises(ValueError, match=message):
        vc.adam_cm(**kwargs)


def test_eadam_cm_checks_the_stability_rule():
    with pytest.raises(ValueError, match=r"^alpha=-3\.0 violates \|alpha\| < 1/\(1-beta1\) = 2 for beta1=0\.5"):
        vc.eadam_cm(alpha=-3.0, betas=(0.5, 0.9, 0.999))
