"""The core's named optimizers and the E adaptor as ``optax.GradientTransformation`` factories.

Each factory here is generated from its ``valley_core`` factory: same hyperparameters, same defaults, same
validation, with ``lr`` spelled ``learning_rate`` as in optax. A factory's arguments are validated when it
is called; ``init`` and ``update`` then run the core's transform over the leaves of the pytrees
(``backends.jax._door``).
"""

from __future__ import annotations

from typing import Any, Callable

import optax

import valley_core as vc
from backends.jax._door import optax_signature, optax_transformation
from valley_core.schedules import ScalarOrSchedule
from valley_core.validation import validate_hyperparameters

OptaxFactory = Callable[..., optax.GradientTransformation]

_DOOR_NOTE = """optax version of ``valley_core.{name}`` (``backends.jax``): a ``GradientTransformation`` over pytrees.

Arguments as the core's (below), except: ``learning_rate`` is the core's ``lr``; ``learning_rate``,
``alpha`` and ``weight_decay`` may be optax schedules (called with the 0-based update count, as optax does)
or arrays (``optax.inject_hyperparams``); masks are pytrees of bools shaped like the parameters or a
callable ``params -> pytree of bools``. ``update`` needs ``params`` whenever the core does (weight decay,
trust ratio).

The core's documentation follows.

"""


def _door(core_factory: Callable[..., vc.GradientTransformation]) -> OptaxFactory:
    signature = optax_signature(core_factory)
    name = core_factory.__name__

    def factory(*args: Any, **kwargs: Any) -> optax.GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return optax_transformation(core_factory, dict(bound.arguments))

    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = "backends.jax"
    factory.__doc__ = _DOOR_NOTE.format(name=name) + (core_factory.__doc__ or "")
    setattr(factory, "__signature__", signature)  # inspect.signature (and optax.inject_hyperparams) read it
    return factory


alto = _door(vc.alto)
alto_vanilla = _door(vc.alto_vanilla)
lamb = _door(vc.lamb)
eadam = _door(vc.eadam)
adam = _door(vc.adam)
eadamw = _door(vc.eadamw)
adamw = _door(vc.adamw)
esgd = _door(vc.esgd)
sgd = _door(vc.sgd)
adam_cm = _door(vc.adam_cm)
eadam_cm = _door(vc.eadam_cm)


def _checked_e_adaptor(
    alpha: ScalarOrSchedule, beta1: float, allow_unstable: bool = False
) -> vc.GradientTransformation:
    (beta1,) = validate_hyperparameters(
        alpha=alpha, betas=(beta1,), beta_names=("beta1",), allow_unstable=allow_unstable
    )
    return vc.e_adaptor(alpha, beta1)


def e_adaptor(alpha: ScalarOrSchedule, beta1: float, allow_unstable: bool = False) -> optax.GradientTransformation:
    """The E adaptor as an optax transformation, to put in front of any optax chain.

    ``u_k = g_k + alpha a_k`` with ``a_k = beta1 a_{k-1} + (1 - beta1)(g_k - g_{k-1})`` (``a_0 = g_0 = 0``),
    per leaf; the core's one-buffer form (``valley_core.e_adaptor``). The paper's stability rule
    ``|alpha| < 1/(1 - beta1)`` is checked unless ``allow_unstable``.

    Args:
        alpha: float, array or optax schedule (0-based count). ``< 0`` explores, ``> 0`` exploits.
        beta1: in ``[0, 1)``.
        allow_unstable: skip the stability rule (research use).

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from backends import jax as bj
        >>> opt = optax.chain(bj.e_adaptor(alpha=0.5, beta1=0.01), optax.adamw(1e-2))
        >>> params = {"w": jnp.array([3.0, -2.0])}
        >>> state = opt.init(params)
        >>> updates, state = opt.update({"w": 2 * params["w"]}, state, params)
        >>> params = optax.apply_updates(params, updates)
    """
    return optax_transformation(_checked_e_adaptor, dict(alpha=alpha, beta1=beta1, allow_unstable=allow_unstable))


#: Every factory of this module by name (the core's ``OPTIMIZERS`` names).
OPTIMIZERS = {name: globals()[name] for name in vc.REGISTRY}
