"""Compact optimizer state (``state_dtype="bfloat16" | "int8"``, ``backends.torch.compact_state``).

Oracles: the formats are transcribed here from their documented definitions (lowbias32 on Python ints, the
bfloat16 neighbours of a float32, the int8 decodings ``scale (c/127)^2`` and ``scale (c/255)^4``), never taken
from the code under test. The parity of a compact run with the float32 run is checked against an error bound
propagated from the per-store bound of the format through the core's recursions (below), not a tuned tolerance.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

import valley_core as vc
from backends.torch import ALTO, AdamCM, EAdam, Lamb
from backends.torch import compact_state as cs
from backends.torch.valley_optimizer import factory_kwargs

SHAPES = [(700,), (3, 300), (1,), ()]
FORMATS = ("bfloat16", "int8")


def lowbias32(x: int) -> int:
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def gradients(steps, seed=1):
    """Drifting noisy float32 gradients, independent of the parameters (errors cannot feed back)."""
    rng = np.random.default_rng(seed)
    scales = [rng.uniform(0.01, 3.0, size=s) for s in SHAPES]  # magnitudes spread within each block
    return [
        [torch.tensor(sc * (1 + 0.01 * k) * rng.normal(size=s), dtype=torch.float32) for sc, s in zip(scales, SHAPES)]
        for k in range(steps)
    ]


def params(seed=0):
    rng = np.random.default_rng(seed)
    return [torch.nn.Parameter(torch.tensor(rng.normal(size=s), dtype=torch.float32)) for s in SHAPES]


def run(make, sequence, ps=None):
    ps = ps or params()
    optimizer = make(ps)
    for grads in sequence:
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        optimizer.step()
    return ps, optimizer


# ------------------------------------------------------------------------------------------------ formats
def test_random_bits_are_lowbias32_of_index_xor_seed():
    seed = cs.seed(7, 3, "AdamState.first")
    assert seed == lowbias32(lowbias32(lowbias32(7 ^ 0x5EED) ^ 3) ^ __import__("zlib").crc32(b"AdamState.first"))
    bits = cs.random_bits(5000, seed)
    assert [int(b) for b in bits[::97]] == [lowbias32(i ^ seed) for i in range(0, 5000, 97)]


def bf16_neighbours(x: float):
    """The two bfloat16 values around float32 ``x``: its upper 16 bits, and those plus one (magnitude)."""
    u = int(np.array([x], dtype=np.float32).view(np.uint32)[0])
    down = u & 0xFFFF0000
    up = down + 0x10000 if u != down else down
    return [float(np.array([v], dtype=np.uint32).view(np.float32)[0]) for v in (down, up)]


def test_bfloat16_store_is_a_neighbour_and_unbiased():
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.normal(size=2000) * 10.0 ** rng.uniform(-6, 3, size=2000), dtype=torch.float32)
    stores = torch.stack([cs.decode(_encoded(x, "bfloat16", s), "b").float() for s in range(400)])
    for i in range(0, 2000, 37):
        assert set(stores[:, i].tolist()) <= set(bf16_neighbours(float(x[i])))
    # E[stored] = x: the mean of 400 independent stores is within 4 standard errors of x (one ulp <= 2^-7 |x|).
    error = (stores.double().mean(0) - x.double()).abs()
    assert bool((error <= 4 * 2.0**-7 * x.double().abs() / math.sqrt(400) + 1e-45).all())
    exact = x.to(torch.bfloat16).float()  # a bfloat16 value is stored as itself
    assert torch.equal(cs.decode(_encoded(exact, "bfloat16", 5), "b").float(), exact)


def expanded(y, p):
    """The int8 decoding's inverse companding in float64 (not bit operations): for y = 2^j (1 + t), 0 <= t < 1,
    and s = floor(p t): 2^(p j + s) (1 + p t - s); the inverse of f(r) = 2^j (1 + (s + m) / p) for
    r = 2^(p j + s) (1 + m), which is r^(1/p) at r = 2^(p j) and linear in r between powers of 2."""
    y = np.asarray(y, dtype=np.float64)
    out = np.zeros_like(y)
    positive = y > 0
    j = np.floor(np.log2(y[positive]))
    t = y[positive] / 2.0**j - 1
    steps = np.floor(p * t)
    out[positive] = 2.0 ** (p * j + steps) * (1 + p * t - steps)
    return out


def test_companding_is_the_root_at_powers_of_four_and_at_most_6_percent_above_it():
    """f(r) (bits (r >> 1) + 0x1FC00000, or (r >> 2) + 0x2FA00000 for v) against its description: the inverse of
    :func:`expanded`, equal to sqrt(r) (r^(1/4)) at powers of 4 (16), never below it, at most 6.1 % above;
    f(1) = 1; decoding the code 0 gives 0."""
    rng = np.random.default_rng(3)
    r = np.concatenate([2.0 ** rng.uniform(-126, 0, 100_000), [1.0, 0.5, 0.25, 2.0**-64]]).astype(np.float32)
    for nonnegative, p in ((False, 2), (True, 4)):
        f = cs.compand(torch.tensor(r), nonnegative).numpy().astype(np.float64)
        shift = 2 if nonnegative else 1
        assert np.array_equal(expanded(f, p), (r.view(np.uint32) >> shift << shift).view(np.float32))
        root = r.astype(np.float64) ** (1 / p)
        assert bool((f >= root * (1 - 2e-7)).all()) and bool((f <= root * 1.0607).all())
        powers = np.isin(r, [1.0, 0.25, 2.0**-64]) if p == 2 else np.isin(r, [1.0, 2.0**-64])
        assert np.array_equal(f[powers], root[powers])
        assert float(cs.expand(torch.zeros(1), nonnegative)) == 0.0


def _encoded(x, state_dtype, seed, key="b"):
    state = {}
    cs.codec(state_dtype).encode(state, key, x, seed)
    return state


@pytest.mark.parametrize("key, nonnegative", [("EState.carry", False), ("AdamState.second", True)])
def test_int8_store_within_one_code_step(key, nonnegative):
    rng = np.random.default_rng(4)
    x = rng.normal(size=1000) * 10.0 ** rng.uniform(-4, 1, size=1000)
    x = np.abs(x) if nonnegative else x
    state = _encoded(torch.tensor(x, dtype=torch.float32), "int8", 11, key)
    codes, scales = state[key].numpy().astype(np.int64), state[key + cs.SCALE].numpy().astype(np.float64)
    assert state[key].dtype == (torch.uint8 if nonnegative else torch.int8)
    block = np.arange(1000) // 256
    assert np.array_equal(scales, [np.abs(x[block == b]).astype(np.float32).max() for b in range(4)])
    scale = scales[block]
    limit = 255 if nonnegative else 127
    # Transcription of the decoding and of the bound (one code step at the top: 4 scale / 255, 2 scale / 127).
    y = (np.abs(codes) * np.float32(1 / limit)).astype(np.float32).astype(np.float64)
    decoded = scale * np.sign(codes) * expanded(y, 4 if nonnegative else 2)
    bound = scale * (1 - expanded(np.float64(np.float32((limit - 1) * np.float32(1 / limit))), 4 if nonnegative else 2))
    assert np.allclose(bound / scale, 4 / 255 if nonnegative else 2 / 127, rtol=1e-4)
    assert np.allclose(cs.decode(state, key).numpy(), decoded, rtol=1e-6, atol=0)
    assert bool((np.abs(decoded - x) <= bound * (1 + 1e-5)).all())
    # Small elements keep nonzero codes: every |x| >= scale / 127^2 (signed) or v >= scale / 255^4 (a linear code
    # would need |x| >= scale / 127).
    floor = scale / (255.0**4 if nonnegative else 127.0**2)
    assert bool((codes[np.abs(x) >= floor * (1 + 1e-6)] != 0).all())
    assert np.count_nonzero(codes) > np.count_nonzero(np.abs(x) >= scale / 127)


def test_bfloat16_buffers_share_one_random_word_per_element_in_groups_of_three():
    """Transcription: sorted keys in groups of three; the group's word ``lowbias32(i ^ seed(step, index, first
    key))``; slot 0 adds its low 16 bits, slot 1 its high 16 bits, slot 2 the two halves xor-ed; then truncation."""
    rng = np.random.default_rng(8)
    keys = ["EState.carry", "AdamState.second", "AdamState.first", "Z.fourth"]
    buffers = {k: torch.tensor(rng.normal(size=300), dtype=torch.float32) for k in keys}
    state = {}
    cs.codec("bfloat16").store(state, buffers, step=12, tensor_index=5)
    ordered = sorted(keys)
    for position, key in enumerate(ordered):
        group, slot = divmod(position, 3)
        seed = cs.seed(12, 5, ordered[3 * group])
        bits = buffers[key].numpy().view(np.uint32).astype(np.int64)
        words = np.array([lowbias32(i ^ seed) for i in range(300)], dtype=np.int64)
        noise = [words & 0xFFFF, words >> 16, (words ^ (words >> 16)) & 0xFFFF][slot]
        expected = (((bits + noise) & 0xFFFF0000) & 0xFFFFFFFF).astype(np.uint32).view(np.float32)
        assert np.array_equal(state[key].float().numpy(), expected), key


def test_int8_codes_transcribed_bit_for_bit():
    """Transcription in NumPy: scale = max(max |x|, FLT_MIN) per 256 (float32); the buffers share words in groups
    of three by sorted key (as bfloat16's), 16 bits per slot; r = min(|x| fl(1/scale), 1); the companding
    f = float with bits (bits(r) >> 1) + 0x1FC00000 (signed), (bits(r) >> 2) + 0x2FA00000 (unsigned);
    ``c = min((floor(f L 2^16) + bits) >> 16, L)`` (with x's sign for the signed code); decoded ``scale g(|c|
    fl(1/L))``, g's bits ``(max(bits(y), bias) - bias) << shift``."""
    rng = np.random.default_rng(12)
    f32 = np.float32
    keys = {"EState.carry": False, "AdamState.second": True, "AdamState.first": False, "Z.fourth": False}
    buffers = {}
    for key, nonnegative in keys.items():
        x = (rng.normal(size=600) * 10.0 ** rng.uniform(-6, 2, size=600)).astype(f32)
        x = np.abs(x) if nonnegative else x
        x[256:512] = 0.0  # an all-zero block: scale FLT_MIN, codes 0, decoded exactly 0
        buffers[key] = x
    state = {}
    cs.codec("int8").store(state, {k: torch.tensor(x) for k, x in buffers.items()}, step=9, tensor_index=4)
    ordered = sorted(keys)
    for position, key in enumerate(ordered):
        x, nonnegative = buffers[key], keys[key]
        group, slot = divmod(position, 3)
        words = np.array([lowbias32(i ^ cs.seed(9, 4, ordered[3 * group])) for i in range(600)], dtype=np.int64)
        bits = [words & 0xFFFF, words >> 16, (words ^ (words >> 16)) & 0xFFFF][slot]
        blocks = np.arange(600) // 256
        scale = np.array([max(np.abs(x[blocks == b]).max(), f32(2.0**-126)) for b in range(3)], dtype=f32)
        ratio = np.minimum(np.abs(x) * (f32(1.0) / scale)[blocks], f32(1.0))
        limit, shift, bias = (255, 2, 0x2FA00000) if nonnegative else (127, 1, 0x1FC00000)
        companded = ((ratio.view(np.uint32) >> np.uint32(shift)) + np.uint32(bias)).view(f32)
        fixed = (companded * f32(limit * 65536)).astype(np.int64)
        codes = np.minimum((fixed + bits) >> 16, limit)
        codes = codes if nonnegative else np.where(x < 0, -codes, codes)
        assert np.array_equal(state[key + cs.SCALE].numpy(), scale), key
        assert np.array_equal(state[key].numpy().astype(np.int64), codes), key
        k = f32(float.fromhex("0x1.010102p-8") if nonnegative else float.fromhex("0x1.020408p-7"))
        y = (np.abs(codes).astype(f32) * k).view(np.uint32)
        expanded_bits = (np.maximum(y, np.uint32(bias)) - np.uint32(bias)) << np.uint32(shift)
        decoded = scale[blocks] * expanded_bits.view(f32)
        decoded = decoded if nonnegative else np.where(codes < 0, -decoded, decoded)
        assert np.array_equal(cs.decode(state, key).numpy(), decoded.astype(f32)), key
        assert not cs.decode(state, key)[256:512].any()


@pytest.mark.parametrize("state_dtype", FORMATS)
def test_fused_equals_core_when_parameters_have_different_step_counts(state_dtype):
    """A parameter without a gradient at the first step starts its state one step later: the next fused step runs
    two batches (step counts 0 and 1), and each tensor must still get its own seeds (gathered in entry order)."""
    first, second = gradients(2)
    pc = params()
    core = ALTO(pc, implementation="core", state_dtype=state_dtype)
    for i, (p, g) in enumerate(zip(pc, first)):
        p.grad = None if i == 0 else g.clone()
    core.step()
    pf = [torch.nn.Parameter(p.detach().clone()) for p in pc]
    fused = ALTO(pf, implementation="fused", state_dtype=state_dtype)
    fused.load_state_dict(core.state_dict())
    for p, q, g in zip(pc, pf, second):
        p.grad, q.grad = g.clone(), g.clone()
    core.step()
    fused.step()
    assert core.state[pc[0]]["step"] + 1 == core.state[pc[1]]["step"] == fused.state[pf[1]]["step"] == 2
    for a, b in zip(pc, pf):
        assert_same_store(core.state[a], fused.state[b], state_dtype)


@pytest.mark.parametrize("implementation", ["core", "fused"])
def test_int8_block_with_nan_decodes_to_nan_and_leaves_other_blocks(implementation):
    """The documented policy: a NaN or Inf reaching an int8 buffer makes its 256-element block's scale NaN and
    its codes 0 (the whole block decodes to NaN, as a float32 buffer would spread it through the parameter's
    later steps); the other blocks are stored as usual. Core and fused paths store the same."""
    stored = []
    for implementation_ in ("core", implementation):
        p = torch.nn.Parameter(torch.ones(600))
        optimizer = ALTO([p], implementation=implementation_, state_dtype="int8")
        g = torch.full((600,), 0.5)
        g[300] = float("nan")
        p.grad = g
        optimizer.step()
        stored.append(optimizer.state[p])
    for state in stored:
        for key in ("EState.carry", "AdamState.first", "AdamState.second"):
            scales, codes = state[key + cs.SCALE], state[key]
            assert bool(torch.isnan(scales[1])) and not bool(codes[256:512].any())
            assert bool(torch.isfinite(scales[[0, 2]]).all())
            decoded = cs.decode(state, key)
            assert bool(torch.isnan(decoded[256:512]).all()) and bool(torch.isfinite(decoded[:256]).all())
    for key in stored[0]:
        if isinstance(stored[0][key], torch.Tensor):
            assert torch.equal(stored[0][key].nan_to_num(), stored[1][key].nan_to_num()), key


def test_small_increments_survive_in_bfloat16():
    """An EMA with beta = 0.999 moving from 1 towards 1.01: each increment (1e-5) is below half a bfloat16 ulp
    at 1 (2^-8), so round-to-nearest would stay at 1 forever; stochastic rounding follows the float32 EMA."""
    exact, nearest, state = 1.0, torch.tensor([1.0]), _encoded(torch.ones(4096), "bfloat16", 0)
    for k in range(3000):
        exact = 0.999 * exact + 0.001 * 1.01
        nearest = (0.999 * nearest.float() + 0.001 * 1.01).to(torch.bfloat16)
        cs.codec("bfloat16").encode(state, "b", 0.999 * cs.decode(state, "b") + 0.001 * 1.01, cs.seed(k, 0, "b"))
    assert float(nearest) == 1.0
    assert abs(float(cs.decode(state, "b").double().mean()) - exact) < 0.1 * (exact - 1.0)


# ------------------------------------------------------------------------------- compact vs float32 runs
def store_bound(value: np.ndarray, state_dtype: str, key: str) -> np.ndarray:
    """The largest error of one store of ``value`` (per element): one ulp for stochastic bfloat16 (up to
    2^-7 |x|), one code step at the top of the block for int8 (``2 scale/127``, ``v``: ``4 scale/255``)."""
    if state_dtype == "bfloat16":
        return 2.0**-7 * np.abs(value)
    flat = np.abs(value).reshape(-1)
    pad = np.concatenate([flat, np.zeros((-flat.size) % 256)]).reshape(-1, 256).max(1)
    scale = np.repeat(pad, 256)[: flat.size].reshape(value.shape)
    return scale * (4 / 255 if cs.nonnegative(key) else 2 / 127)


@pytest.mark.parametrize("state_dtype", FORMATS)
@pytest.mark.parametrize("cls", [ALTO, EAdam, Lamb])
def test_compact_state_within_the_bound_propagated_from_the_format(cls, state_dtype):
    """200 steps, fixed gradients. The error bounds follow the core's recursions (``valley_core.elementwise``):
    carry ``b' = beta1 (b + (1-beta1) g) - (1-beta1) g`` (error x beta1), ``u = g + alpha (b + (1-beta1) g)``
    (error |alpha| e_b), ``m' = beta2 m + (1-beta2) u``, ``v' = beta3 v + (1-beta3) u^2`` (error
    ``2|u| e_u + e_u^2``), plus one store bound each step at the compact run's value (|reference| + bound)."""
    sequence = gradients(200)
    _, reference = run(lambda ps: cls(ps, implementation="core"), sequence)
    ps, compact = run(lambda ps: cls(ps, implementation="core", state_dtype=state_dtype), sequence)
    kwargs = factory_kwargs(cls.factory, reference.param_groups[0], 1)
    if "alpha" in kwargs:
        alpha, (beta1, beta2, beta3) = float(kwargs["alpha"]), kwargs["betas"]
    else:
        alpha, beta1, (beta2, beta3) = 0.0, 0.0, kwargs["betas"]
    # The reference trajectory of the buffers (float32, the core), replayed here to know each step's values.
    for index in range(len(SHAPES)):
        b = m = v = np.zeros(SHAPES[index])
        e_b = e_m = e_v = np.zeros(SHAPES[index])
        for grads in sequence:
            g = grads[index].double().numpy()
            ema = b + (1 - beta1) * g
            u = g + alpha * ema if alpha else g
            e_u = abs(alpha) * e_b
            b = beta1 * ema - (1 - beta1) * g
            m = beta2 * m + (1 - beta2) * u
            v = beta3 * v + (1 - beta3) * u * u
            e_b = beta1 * e_b
            e_b = e_b + store_bound(np.abs(b) + e_b, state_dtype, "EState.carry")
            e_m = beta2 * e_m + (1 - beta2) * e_u
            e_m = e_m + store_bound(np.abs(m) + e_m, state_dtype, "AdamState.first")
            e_v = beta3 * e_v + (1 - beta3) * (2 * np.abs(u) * e_u + e_u * e_u)
            e_v = e_v + store_bound(np.abs(v) + e_v, state_dtype, "AdamState.second")
        p_ref, p_cmp = reference.param_groups[0]["params"][index], ps[index]
        for key, bound, exact in (("AdamState.first", e_m, m), ("AdamState.second", e_v, v), ("EState.carry", e_b, b)):
            if key not in compact.state[p_cmp]:
                continue
            ref = reference.state[p_ref][key].double().numpy()
            got = cs.decode(compact.state[p_cmp], key).double().numpy()
            assert np.allclose(ref, exact, rtol=1e-4, atol=1e-6)  # the replay is the core's trajectory
            slack = 1e-5 * np.abs(ref) + 1e-9  # float32 arithmetic of the two runs
            assert bool((np.abs(got - ref) <= bound + slack).all()), (key, float(np.max(np.abs(got - ref) - bound)))


# ---------------------------------------------------------------------------------- fused == core, resume
def assert_same_store(core_state, fused_state, state_dtype):
    """Equal codes, except where the float32 values before the store differed in their last bit (torch's
    element-wise kernels and the C++ ones may round one operation differently, 1 ulp) and the random threshold fell
    between them: then the two stores are neighbouring codes, one store bound apart. Such flips are rare."""
    flips = total = 0
    for key in cs.buffer_keys(core_state):
        assert core_state[key].dtype == fused_state[key].dtype
        core, fused = cs.decode(core_state, key).double(), cs.decode(fused_state, key).double()
        bound = torch.tensor(store_bound(core.abs().numpy(), state_dtype, key)) * (1 + 1e-5)
        assert bool(((core - fused).abs() <= bound).all()), key
        flips += int((core_state[key] != fused_state[key]).sum())
        total += core.numel()
    assert flips <= max(1, total // 1000), (flips, total)


@pytest.mark.parametrize("state_dtype", FORMATS)
@pytest.mark.parametrize("cls", [ALTO, EAdam, Lamb])
def test_fused_equals_core_for_compact_state(cls, state_dtype):
    """Each of 40 steps from the same state (the core's, loaded into a fused optimizer): the same stores (see
    :func:`assert_same_store`) and parameters as close as for float32 state (the norms are summed in another
    order). Then 40 steps of each executor on its own: the stores still agree within the format's bound."""
    sequence = gradients(40)
    pc = params()
    core = cls(pc, implementation="core", state_dtype=state_dtype)
    for k, grads in enumerate(sequence):
        pf = [torch.nn.Parameter(p.detach().clone()) for p in pc]
        fused = cls(pf, implementation="fused", state_dtype=state_dtype)
        if k:
            fused.load_state_dict(core.state_dict())
        for p, q, g in zip(pc, pf, grads):
            p.grad, q.grad = g.clone(), g.clone()
        core.step()
        fused.step()
        for a, b in zip(pc, pf):
            assert_same_store(core.state[a], fused.state[b], state_dtype)
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)
    pf, fused = run(lambda ps: cls(ps, implementation="fused", state_dtype=state_dtype), sequence)
    for a, b in zip(pc, pf):
        assert fused.state[b]["step"] == core.state[a]["step"] == 40


@pytest.mark.parametrize("state_dtype", FORMATS)
def test_fused_compact_results_do_not_depend_on_the_number_of_threads(state_dtype):
    """Compact kernels sum each 256-block's squares pairwise and the blocks in order, and their random bits depend
    on the element, not the thread: parameters and stored state are the same bits for 1, 2 and 3 threads."""
    shapes = [(2 * 4096 + 300,), (3, 1000), (7,)]
    rng = np.random.default_rng(11)
    sequence = [[torch.tensor(rng.normal(size=s), dtype=torch.float32) for s in shapes] for _ in range(6)]
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            ps = [torch.nn.Parameter(torch.ones(s)) for s in shapes]
            optimizer = ALTO(ps, implementation="fused", state_dtype=state_dtype)
            for grads in sequence:
                for p, g in zip(ps, grads):
                    p.grad = g.clone()
                optimizer.step()
            results.append((ps, optimizer))
    finally:
        torch.set_num_threads(threads)
    (first, reference), others = results[0], results[1:]
    for ps, optimizer in others:
        for p, q in zip(ps, first):
            assert torch.equal(p, q)
            for key, value in reference.state[q].items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(optimizer.state[p][key].view(-1), value.view(-1)), key


def test_fused_compact_on_multi_block_tensors():
    """Tensors of several 4096-element kernel blocks and a partial last int8 block."""
    shapes = [(3 * 4096 + 77,), (257,)]
    rng = np.random.default_rng(9)
    sequence = [[torch.tensor(rng.normal(size=s), dtype=torch.float32) for s in shapes] for _ in range(5)]
    for state_dtype in FORMATS:
        results = []
        for implementation in ("core", "fused"):
            ps = [torch.nn.Parameter(torch.ones(s)) for s in shapes]
            optimizer = ALTO(ps, implementation=implementation, state_dtype=state_dtype)
            for grads in sequence:
                for p, g in zip(ps, grads):
                    p.grad = g
                optimizer.step()
            results.append((ps, optimizer))
        (pc, core), (pf, fused) = results
        for a, b in zip(pc, pf):
            assert_same_store(core.state[a], fused.state[b], state_dtype)
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("implementation", ["core", "fused"])
@pytest.mark.parametrize("state_dtype", FORMATS)
def test_resume_equals_uninterrupted_bit_for_bit(state_dtype, implementation):
    sequence = gradients(40)
    make = lambda ps: ALTO(ps, implementation=implementation, state_dtype=state_dtype)  # noqa: E731
    p_full, full = run(make, sequence)
    p_half, half = run(make, sequence[:17])
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in p_half], "optimizer": half.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    ps = [torch.nn.Parameter(p.clone()) for p in saved["params"]]
    resumed = make(ps)
    resumed.load_state_dict(saved["optimizer"])
    for grads in sequence[17:]:
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        resumed.step()
    for a, b in zip(p_full, ps):
        assert torch.equal(a, b)
        for key, value in full.state[a].items():
            assert (
                (value == resumed.state[b][key])
                if not isinstance(value, torch.Tensor)
                else torch.equal(value, resumed.state[b][key])
            )


# ---------------------------------------------------------------------------------- checkpoints, bytes, refusals
def test_convert_state_dict_float32_to_compact_and_back():
    sequence = gradients(10)
    ps, optimizer = run(lambda ps: ALTO(ps), sequence)
    plain = optimizer.state_dict()
    for state_dtype in FORMATS:
        compact = cs.convert_state_dict(plain, state_dtype)
        assert all(g["state_dtype"] == state_dtype for g in compact["param_groups"])
        target = ALTO([torch.nn.Parameter(p.detach().clone()) for p in ps], state_dtype=state_dtype)
        target.load_state_dict(compact)
        back = cs.convert_state_dict(target.state_dict(), "float32")
        for index, state in plain["state"].items():
            for key in ("EState.carry", "AdamState.first", "AdamState.second"):
                ref, got = state[key], back["state"][index][key]
                assert got.dtype == torch.float32
                bound = torch.tensor(store_bound(ref.double().numpy(), state_dtype, key))
                assert bool(((got.double() - ref.double()).abs() <= bound * (1 + 1e-5) + 1e-30).all())
        # the optimizer continues from the converted state
        for p, g in zip(target.param_groups[0]["params"], sequence[0]):
            p.grad = g.clone()
        target.step()


def test_loading_a_float32_checkpoint_into_a_compact_group_converts_it():
    ps, optimizer = run(lambda ps: ALTO(ps), gradients(3))
    saved = optimizer.state_dict()
    for group in saved["param_groups"]:
        group["state_dtype"] = "int8"  # as an optimizer built with state_dtype="int8" would restore it
    target = ALTO([torch.nn.Parameter(p.detach().clone()) for p in ps], state_dtype="int8")
    target.load_state_dict(saved)
    first = target.state[target.param_groups[0]["params"][0]]
    assert first["AdamState.first"].dtype == torch.int8 and first["AdamState.second"].dtype == torch.uint8


@pytest.mark.parametrize("state_dtype, ratio", [("float32", 3.0), ("bfloat16", 1.5), ("int8", 0.8)])
def test_state_bytes(state_dtype, ratio):
    ps = [torch.nn.Parameter(torch.zeros(256 * 1000))]
    optimizer = ALTO(ps, state_dtype=state_dtype)
    ps[0].grad = torch.ones_like(ps[0])
    optimizer.step()
    measured = cs.state_bytes(optimizer) / (ps[0].numel() * 4)
    assert measured <= ratio and (state_dtype == "int8" or measured == ratio)


def test_refusals():
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="state_dtype='float16' violates"):
        ALTO([p], state_dtype="float16")
    p.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match="compiled path runs float32 state"):
        ALTO([p], implementation="compiled", state_dtype="bfloat16").step()
    q = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    q.grad = torch.ones(3, dtype=torch.float64)
    optimizer = ALTO([q], state_dtype="int8")
    with pytest.raises(TypeError, match="float64"):
        optimizer.step()
    assert not optimizer.state[q]
    _, optimizer = run(lambda ps: ALTO(ps, state_dtype="int8"), gradients(2))
    saved = optimizer.state_dict()
    good = saved["state"][0]["AdamState.first" + cs.SCALE]
    saved["state"][0]["AdamState.first" + cs.SCALE] = torch.zeros(5)
    fresh = ALTO(params(), state_dtype="int8")
    with pytest.raises(ValueError, match=r"AdamState\.first\.scales must be a float32 tensor of shape \(3,\)"):
        fresh.load_state_dict(saved)
    assert not fresh.state
    saved["state"][0]["AdamState.first" + cs.SCALE] = good
    saved["state"][0]["AdamState.first" + cs.LEGACY_SCALE] = good.clone()
    with pytest.raises(ValueError, match=r"scales under both AdamState\.first\.scales and AdamState\.first\.scale "):
        fresh.load_state_dict(saved)
    assert not fresh.state


def test_int8_state_of_the_legacy_code_is_decoded_with_it_and_converted_on_load():
    """int8 checkpoints of the first code (square roots, valley d52546f: scales under ``key + ".scale"``) decode
    with that code, transcribed here (``scale (|c| fl(1/127))^2`` with c's sign, ``scale ((c fl(1/255))^2)^2``):
    into a float32 group exactly, into an int8 group within one store of the current code, never as the
    current code (whose decoding of the same codes is up to 11 % lower, 21 % for ``v``)."""
    _, trained = run(lambda ps: ALTO(ps), gradients(3))
    legacy = trained.state_dict()
    expected = {}
    rng = np.random.default_rng(5)
    f32 = np.float32
    for index, state in legacy["state"].items():
        for key in list(cs.buffer_keys(state)):
            n = state[key].numel()
            nonnegative = cs.nonnegative(key)
            codes = rng.integers(0, 256, size=n) if nonnegative else rng.integers(-127, 128, size=n)
            scales = rng.uniform(0.5, 2.0, size=-(-n // 256)).astype(f32)
            a = np.abs(codes).astype(f32) * f32(1 / 255 if nonnegative else 1 / 127)
            value = scales.repeat(256)[:n] * ((a * a) * (a * a) if nonnegative else a * a)
            expected[index, key] = np.where(codes < 0, -value, value).astype(f32).reshape(state[key].shape)
            state[key] = torch.tensor(codes, dtype=torch.uint8 if nonnegative else torch.int8).reshape(state[key].shape)
            state[key + cs.LEGACY_SCALE] = torch.tensor(scales)
    assert cs.stored_format(legacy["state"][0], "AdamState.first") == "int8 (legacy code)"
    for group in legacy["param_groups"]:
        group["state_dtype"] = "int8"
    as_float = ALTO(params())
    as_float.load_state_dict(cs.convert_state_dict(legacy, "float32"))
    as_int8 = ALTO(params(), state_dtype="int8")
    as_int8.load_state_dict(legacy)
    for index, p in enumerate(as_float.param_groups[0]["params"]):
        q = as_int8.param_groups[0]["params"][index]
        for key in cs.buffer_keys(as_float.state[p]):
            want = expected[index, key]
            assert np.array_equal(as_float.state[p][key].numpy(), want), key
            assert cs.SCALE in "".join(k for k in as_int8.state[q] if k.startswith(key + "."))
            assert not any(k.endswith(cs.LEGACY_SCALE) for k in as_int8.state[q])
            bound = store_bound(want, "int8", key) * (1 + 1e-5)
            assert bool((np.abs(cs.decode(as_int8.state[q], key).numpy() - want) <= bound).all()), key


def test_the_factory_is_not_given_state_dtype():
    kwargs = factory_kwargs(vc.alto, {**ALTO.hyperparameter_defaults(), "state_dtype": "int8"}, 1)
    assert "state_dtype" not in kwargs


def test_param_groups_keep_their_own_state_dtype():
    """One optimizer, three groups (int8, bfloat16, float32): each group's buffers in its own format, the
    float32 group bit for bit as an optimizer of that group alone, the compact groups as the core path stores."""
    sequence = gradients(6)
    results = {}
    for implementation in ("core", "fused"):
        ps = params()
        groups = [
            {"params": ps[:2], "state_dtype": "int8"},
            {"params": ps[2:3], "state_dtype": "bfloat16"},
            {"params": ps[3:]},
        ]
        results[implementation] = (ps, *run(lambda _: ALTO(groups, implementation=implementation), sequence, ps))
    (pc, _, core), (pf, _, fused) = results["core"], results["fused"]
    for p, expected in zip(pf, (torch.int8, torch.int8, torch.bfloat16, torch.float32)):
        assert fused.state[p]["AdamState.first"].dtype == expected
    for a, b, state_dtype in zip(pc[:3], pf[:3], ("int8", "int8", "bfloat16")):
        assert_same_store(core.state[a], fused.state[b], state_dtype)
    alone_params = [torch.nn.Parameter(p.detach().clone()) for p in params()[3:]]
    _, alone = run(lambda ps: ALTO(ps, implementation="fused"), [grads[3:] for grads in sequence], alone_params)
    assert torch.equal(alone_params[0], pf[3])
    for key, value in alone.state[alone_params[0]].items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(fused.state[pf[3]][key])), key


def test_changing_a_groups_state_dtype_between_steps():
    """A group switched from float32 to int8 between steps: ``"auto"`` runs that step on the core path, which
    reads the float32 buffers and stores int8 ones (then the fused path takes over); an explicit ``"fused"``
    refuses the step before writing anything (its kernels read the group's format only)."""
    sequence = gradients(8)
    ps, optimizer = run(lambda ps: ALTO(ps), sequence[:4])
    reference_ps = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    reference = ALTO(reference_ps)
    reference.load_state_dict(optimizer.state_dict())
    optimizer.param_groups[0]["state_dtype"] = "int8"
    for grads in sequence[4:]:
        for p, q, g in zip(ps, reference_ps, grads):
            p.grad, q.grad = g.clone(), g.clone()
        optimizer.step()
        reference.step()
    assert not optimizer.dispatcher.failed  # the fused path was passed over for one step, not given up
    for p, q in zip(ps, reference_ps):
        assert optimizer.state[p]["EState.carry"].dtype == torch.int8 and optimizer.state[p]["step"] == 8
        for key in ("EState.carry", "AdamState.first", "AdamState.second"):
            ref, got = reference.state[q][key].double(), cs.decode(optimizer.state[p], key).double()
            # Not the propagated bound (test_compact_state_within_the_bound_propagated_from_the_format has it):
            # 4 stores of at most one code step (2/127, 4/255: < 1.6 % of the block's largest value) each, and
            # the carry's errors fed to m and v through |alpha| (1 - beta2) < 1, stay below 10 % of the largest.
            assert float((got - ref).abs().max()) <= 0.1 * float(ref.abs().max()) + 1e-12, key
    ps, optimizer = run(lambda ps: ALTO(ps, implementation="fused"), sequence[:2])
    before = {k: v.clone() for k, v in optimizer.state[ps[0]].items() if isinstance(v, torch.Tensor)}
    optimizer.param_groups[0]["state_dtype"] = "bfloat16"
    for p, g in zip(ps, sequence[2]):
        p.grad = g.clone()
    with pytest.raises(
        RuntimeError, match=r"a state buffer is torch.float32, not state_dtype=.bfloat16. \(the core path converts it\)"
    ):
        optimizer.step()
    assert all(torch.equal(v, optimizer.state[ps[0]][k]) for k, v in before.items())


def test_adam_cm_keeps_float32_state():
    """Adam+CM's slot priorities choose which momenta are kept: compact state is refused (at construction, and
    for a group switched later, before anything is written) instead of rounding those choices."""
    with pytest.raises(ValueError, match="state_dtype='int8' is not offered here: Adam\\+CM's slot priorities"):
        AdamCM([torch.nn.Parameter(torch.ones(3))], state_dtype="int8")
    ps, optimizer = run(lambda ps: AdamCM(ps), gradients(2))
    before = {k: v.clone() for k, v in optimizer.state[ps[0]].items() if isinstance(v, torch.Tensor)}
    optimizer.param_groups[0]["state_dtype"] = "bfloat16"
    for p, g in zip(ps, gradients(1, seed=5)[0]):
        p.grad = g
    with pytest.raises(ValueError, match="is not offered here"):
        optimizer.step()
    assert all(torch.equal(v, optimizer.state[ps[0]][k]) for k, v in before.items())


def test_convert_state_dict_names_state_of_unlisted_parameters():
    _, optimizer = run(lambda ps: ALTO(ps), gradients(1))
    saved = optimizer.state_dict()
    saved["state"][99] = saved["state"][0]
    with pytest.raises(ValueError, match=r"state for parameter ids \[99\], which no param group lists"):
        cs.convert_state_dict(saved, "int8")
