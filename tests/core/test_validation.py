"""Invalid hyperparameters raise ValueError naming the parameter, its value and the rule."""

from __future__ import annotations

import re

import pytest

import valley_core as vc

ERROR_CASES = [
    (
        vc.alto,
        dict(alpha=-5.0, betas=(0.1, 0.9, 0.99)),
        r"^alpha=-5\.0 violates \|alpha\| < 1/\(1-beta1\) = 1\.11 for beta1=0\.1 \(pass allow_unstable=True",
    ),
    (vc.alto, dict(alpha=100.0), r"^alpha=100\.0 violates \|alpha\| < 1/\(1-beta1\) = 100 for beta1=0\.99"),
    (vc.eadam, dict(alpha=1.0, betas=(0.0, 0.9, 0.999)), r"^alpha=1\.0 violates \|alpha\| < 1/\(1-beta1\) = 1 "),
    (vc.esgd, dict(alpha=-2.0, betas=(0.4, 0.0)), r"^alpha=-2\.0 violates \|alpha\| < 1/\(1-beta1\) = 1\.67"),
    (vc.alto, dict(lr=-1e-3), r"^lr=-0\.001 violates lr >= 0$"),
    (vc.alto, dict(lr=float("nan")), r"^lr=nan violates lr is finite$"),
    (vc.alto, dict(lr="0.1"), r"^lr='0\.1' violates lr is a real number \(got str\)$"),
    (vc.alto, dict(lr=True), r"^lr=True violates lr is a real number \(got bool\)$"),
    (vc.alto, dict(alpha=float("inf")), r"^alpha=inf violates alpha is finite$"),
    (vc.alto, dict(betas=(1.0, 0.9, 0.99)), r"^beta1=1\.0 violates 0 <= beta1 < 1$"),
    (vc.alto, dict(betas=(0.9, -0.1, 0.99)), r"^beta2=-0\.1 violates 0 <= beta2 < 1$"),
    (vc.alto, dict(betas=(0.9, 0.9, 1.5)), r"^beta3=1\.5 violates 0 <= beta3 < 1$"),
    (
        vc.alto,
        dict(betas=(0.9, 0.99)),
        r"^betas=\(0\.9, 0\.99\) violates betas is a sequence of 3 numbers "
        r"\(beta1, beta2, beta3\)$",
    ),
    (vc.lamb, dict(betas=(0.9, 0.99, 0.999)), r"^betas=.* violates betas is a sequence of 2 numbers \(beta2, beta3\)$"),
    (vc.alto, dict(eps=-1e-8), r"^eps=-1e-08 violates eps >= 0$"),
    (vc.alto, dict(weight_decay=-0.1), r"^weight_decay=-0\.1 violates weight_decay >= 0$"),
    (vc.alto, dict(trust_eps=-1.0), r"^trust_eps=-1\.0 violates trust_eps >= 0$"),
    (vc.alto, dict(norm_eps=-1.0), r"^norm_eps=-1\.0 violates norm_eps >= 0$"),
    (vc.alto, dict(bias_correction=1), r"^bias_correction=1 violates bias_correction is a bool$"),
    (vc.alto, dict(allow_unstable="yes"), r"^allow_unstable='yes' violates allow_unstable is a bool$"),
    (vc.alto, dict(lr=lambda k: -1.0), r"^lr\(1\)=-1\.0 violates lr\(1\) >= 0$|^lr=-1\.0 violates lr >= 0$"),
    (
        vc.alto,
        dict(alpha=vc.inverse_sqrt(-50.0), betas=(0.9, 0.9, 0.99)),
        r"^alpha=-50\.0 violates \|alpha\| < 1/\(1-beta1\) = 10 for beta1=0\.9",
    ),
    (vc.sgd, dict(momentum=1.0), r"^momentum=1\.0 violates 0 <= momentum < 1$"),
    (vc.adamw, dict(weight_decay=float("inf")), r"^weight_decay=inf violates weight_decay is finite$"),
]


@pytest.mark.parametrize(
    "factory,kwargs,pattern",
    ERROR_CASES,
    ids=[f"{f.__name__}-{'-'.join(k)}-{i}" for i, (f, k, _) in enumerate(ERROR_CASES)],
)
def test_invalid_hyperparameters_raise_a_clear_error(factory, kwargs, pattern):
    with pytest.raises(ValueError) as error:
        factory(**kwargs)
    assert re.search(pattern, str(error.value)), str(error.value)


def test_stability_rule_can_be_opted_out_of_explicitly():
    transform = vc.alto(alpha=-5.0, betas=(0.1, 0.9, 0.99), allow_unstable=True)
    assert transform.name == "alto"


def test_stability_boundary_is_strict():
    with pytest.raises(ValueError, match="violates"):
        vc.eadam(alpha=2.0, betas=(0.5, 0.9, 0.999))
    vc.eadam(alpha=1.999, betas=(0.5, 0.9, 0.999))
    assert vc.stability_bound(0.5) == 2.0


def test_every_named_optimizer_validates():
    """No entry point skips the validator."""
    for name, factory in vc.OPTIMIZERS.items():
        with pytest.raises(ValueError, match=r"^lr=-1\.0 violates lr >= 0$"):
            factory(lr=-1.0)


def test_mask_length_mismatch_is_reported():
    import numpy as np

    transform = vc.alto(weight_decay_mask=[True])
    params = (np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="mask has 1 entries for 2 tensors"):
        transform.update(params, transform.init(params), params)


def test_state_built_for_other_params_is_reported():
    import numpy as np

    transform = vc.alto()
    state = transform.init((np.ones(2),))
    params = (np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="got 2 gradients for a state built for 1 tensors"):
        transform.update(params, state, params)


@pytest.mark.parametrize("name", sorted(vc.OPTIMIZERS))
def test_gradient_of_another_shape_than_its_parameter_is_refused(name):
    import numpy as np

    transform = vc.OPTIMIZERS[name]()
    params = (np.ones(2), np.ones(3))
    state = transform.init(params)
    grads = (np.ones(2), np.ones((3, 3)))  # would broadcast against the (3,) parameter
    with pytest.raises(ValueError, match=r"grads\[1\] has shape \(3, 3\) but params\[1\] has shape \(3,\)"):
        transform.update(grads, state, params)


@pytest.mark.parametrize("name", sorted(vc.OPTIMIZERS))
def test_params_fewer_than_gradients_are_refused(name):
    import numpy as np

    transform = vc.OPTIMIZERS[name]()
    params = (np.ones(2), np.ones(3))
    state = transform.init(params)
    with pytest.raises(ValueError, match=r"got 2 gradients but 1 params"):
        transform.update(params, state, params[:1])


def test_shape_check_passes_symbolic_tensors_of_unknown_sizes():
    from valley_core.base import check_update_inputs

    class Symbolic:  # what a tracer exposes: a shape whose sizes may not be known yet
        def __init__(self, shape):
            self.shape = shape

    check_update_inputs((Symbolic((None, 3)),), (Symbolic((5, 3)),))
    with pytest.raises(ValueError, match=r"grads\[0\] has shape \(None, 4\) but params\[0\] has shape \(5, 3\)"):
        check_update_inputs((Symbolic((None, 4)),), (Symbolic((5, 3)),))


def test_zero_dimensional_arrays_are_checked_by_value():
    """A 0-d real array (what the element-wise functions accept as a scalar) is checked like a float."""
    import numpy as np

    vc.alto(lr=np.asarray(1e-3), alpha=np.float64(-1.0), betas=(0.9, 0.9, 0.99), eps=np.asarray(1e-6))
    with pytest.raises(ValueError, match=r"^lr=-1\.0 violates lr >= 0$"):
        vc.alto(lr=np.asarray(-1.0))
    with pytest.raises(ValueError, match=r"^alpha=-50\.0 violates \|alpha\| < 1/\(1-beta1\) = 10 for beta1=0\.9"):
        vc.alto(alpha=np.asarray(-50.0), betas=(0.9, 0.9, 0.99))
    with pytest.raises(
        ValueError, match=r"^lr=array\(\[1\., 1\.\]\) violates lr is a real number \(got ndarray of shape"
    ):
        vc.alto(lr=np.ones(2))
    with pytest.raises(ValueError, match=r"^eps=array\(True\) violates eps is a real number"):
        vc.alto(eps=np.asarray(True))


def test_traced_arrays_are_left_to_their_adapter():
    """Inside ``jax.jit`` a hyperparameter has no value yet: accepted unchecked (backends.jax checks at init)."""
    jax = pytest.importorskip("jax")

    def build(lr, alpha):
        vc.alto(lr=lr, alpha=alpha, betas=(0.1, 0.9, 0.99))  # alpha=-50 would violate the rule if it were known
        return lr

    assert float(jax.jit(build)(jax.numpy.asarray(1e-3), jax.numpy.asarray(-50.0))) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="violates"):
        build(jax.numpy.asarray(1e-3), jax.numpy.asarray(-50.0))


def test_symbolic_values_are_left_to_their_tracer():
    """A value of shape () without a float (a tracer's symbol) is accepted unchecked, betas included, while the
    concrete values beside it are checked; the core has no tracer switch (the tracer owns its own context)."""
    from backends.kernels.trace import NotTraceable, symbolic_hyperparameters
    from valley_core import validation
    from valley_core.validation import validate_hyperparameters

    class Symbol:
        shape = ()

    s, names = Symbol(), ("beta1", "beta2", "beta3")
    assert validate_hyperparameters(lr=s, alpha=s, betas=(s, 0.9, 0.99), beta_names=names, eps=s) == (s, 0.9, 0.99)
    with pytest.raises(ValueError, match=r"^beta2=1\.5 violates 0 <= beta2 < 1$"):
        validate_hyperparameters(alpha=s, betas=(s, 1.5, 0.99), beta_names=names)
    assert not hasattr(validation, "symbolic_hyperparameters")
    with pytest.raises(NotTraceable, match="needs the value of a hyperparameter"), symbolic_hyperparameters():
        vc.adam_cm(decay=s)
