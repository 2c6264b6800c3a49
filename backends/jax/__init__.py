"""``valley_core`` as optax transformations for JAX (``backends.jax``).

    >>> import jax, jax.numpy as jnp, optax
    >>> from backends import jax as bj
    >>> opt = bj.alto(learning_rate=0.05, alpha=-1.0, betas=(0.5, 0.9, 0.99), weight_decay=0.0)
    >>> params = {"w": jnp.array([3.0, -2.0])}
    >>> state = opt.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...     grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
    ...     updates, state = opt.update(grads, state, params)
    ...     return optax.apply_updates(params, updates), state
    >>> for _ in range(300):
    ...     params, state = step(params, state)
    >>> bool(jnp.abs(params["w"]).max() < 0.1)
    True

Each factory (``alto``, ``alto_vanilla``, ``lamb``, ``eadam``, ``adam``, ``eadamw``, ``adamw``, ``esgd``,
``sgd``, ``adam_cm``, ``eadam_cm``) takes the core factory's hyperparameters and defaults (``lr`` spelled
``learning_rate``) and returns an ``optax.GradientTransformation`` whose update is the core's, run with
``xp=jax.numpy`` over the leaves of the pytrees. ``e_adaptor(alpha, beta1)`` goes in front of any optax
chain. The state is shaped like the parameters (each per-tensor field a pytree of their structure, as
``optax.adamw``'s ``mu``), so sharding rules, ``optax.tree_utils`` and ``flax.nnx`` treat it as optax's;
``core_state(state, params)`` gives the core's layout, ``state_like_params(state, params)`` converts a state
of valley 0.1.0's layout. See ``docs/jax.md``.
"""

try:
    import jax  # noqa: F401
    import optax  # noqa: F401
except ImportError as missing:  # say which extra brings them, not only which module is absent
    raise ImportError(
        f'backends.jax needs JAX and optax ({missing}); install them with: pip install "valley-optim[jax]"',
        name=missing.name,
    ) from missing

from backends.jax._door import core_state, state_like_params  # noqa: E402
from backends.jax.optimizers import (  # noqa: E402
    OPTIMIZERS,
    adam,
    adam_cm,
    adamw,
    alto,
    alto_vanilla,
    e_adaptor,
    eadam,
    eadam_cm,
    eadamw,
    esgd,
    lamb,
    sgd,
)

__all__ = [
    "OPTIMIZERS",
    "adam",
    "adam_cm",
    "adamw",
    "alto",
    "alto_vanilla",
    "core_state",
    "e_adaptor",
    "eadam",
    "eadam_cm",
    "eadamw",
    "esgd",
    "lamb",
    "sgd",
    "state_like_params",
]
