"""The named optimizers: thin compositions of the transforms.

Every optimizer validates its hyperparameters with ``valley_core.validation`` (the same rules every adapter
uses) and returns a ``GradientTransformation``. ``alpha = 0`` gives back the base optimizer exactly:
``alto -> lamb``, ``alto_vanilla -> lamb(bias_correction=False)``, ``eadam -> adam``, ``eadamw -> adamw``,
``esgd -> sgd``.

Conventions: the E-optimizers take ``betas = (beta1, beta2, beta3)`` (beta1 for the E adaptor's EMA, beta2
for m, beta3 for v: the order of the authors' code); the base optimizers take the moment coefficients only,
``betas = (beta2, beta3)``, as torch does. ``lr``, ``alpha`` and ``weight_decay`` accept a float or a
schedule ``k -> value`` (``valley_core.schedules``).
"""

from __future__ import annotations

from typing import Optional, Tuple

from valley_core.base import GradientTransformation, chain
from valley_core.schedules import ScalarOrSchedule
from valley_core.transforms import (
    add_decayed_weights,
    e_adaptor,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_trust_ratio,
    trace,
)
from valley_core.transforms.critical_momenta import scale_by_adam_critical_momenta
from valley_core.transforms.weight_decay import Mask
from valley_core.validation import validate_hyperparameters

_E3 = ("beta1", "beta2", "beta3")
_MOMENTS = ("beta2", "beta3")


def _named(transform: GradientTransformation, name: str) -> GradientTransformation:
    return transform._replace(name=name)


def _lamb_chain(
    lr,
    adapt,
    betas_m_v,
    eps,
    weight_decay,
    trust_eps,
    norm_eps,
    bias_correction,
    weight_decay_mask,
    trust_ratio_mask,
    zero_norm_ratio,
) -> Tuple[GradientTransformation, ...]:
    beta2, beta3 = betas_m_v
    return (
        *adapt,
        scale_by_adam(beta2, beta3, eps, bias_correction),
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_trust_ratio(trust_eps, norm_eps, trust_ratio_mask, zero_norm_ratio),
        scale_by_learning_rate(lr),
    )


def alto(
    lr: ScalarOrSchedule = 1e-3,
    alpha: ScalarOrSchedule = -5.0,
    betas: Tuple[float, float, float] = (0.99, 0.9, 0.99),
    eps: float = 1e-6,
    weight_decay: ScalarOrSchedule = 1e-4,
    trust_eps: float = 1e-6,
    norm_eps: float = 1e-10,
    bias_correction: bool = True,
    weight_decay_mask: Mask = None,
    trust_ratio_mask: Mask = None,
    allow_unstable: bool = False,
    zero_norm_ratio: Optional[float] = 1.0,
) -> GradientTransformation:
    """ALTO: the E adaptor applied to Lamb (the paper's Algorithm 2; Algorithm 1 with ``bias_correction=False``).

    Per tensor ("layer") ``i``, with ``u_k = g_k + alpha a_k`` from the E adaptor::

        m_k = beta2 m_{k-1} + (1 - beta2) u_k        v_k = beta3 v_{k-1} + (1 - beta3) u_k^2
        r_k = m^_k / (sqrt(v^_k) + eps) + lambda theta_k
        phi = ||theta_k^(i)|| + norm_eps
        theta_{k+1}^(i) = theta_k^(i) - lr r_k^(i) phi / (||r_k^(i)|| + trust_eps phi)

    Deviations from the paper: where a norm is zero the trust ratio is ``zero_norm_ratio`` (default 1; ``None``
    restores the paper's formula, see ``reductions.trust_ratio``). Additions: ``weight_decay_mask`` and
    ``trust_ratio_mask`` (per-tensor switches; the paper applies both to every tensor), schedules for
    lr/alpha/weight_decay.
    Unlike the authors' code, no gradient clipping is applied and the trust ratio is applied whatever the
    weight decay (see ``docs/algorithm.md``).

    Args:
        lr: learning rate (the paper used 1e-3 at batch 256, 1e-2 at batch 4096).
        alpha: exploration coefficient; ``|alpha| < 1/(1 - beta1)`` is enforced unless ``allow_unstable``.
        betas: ``(beta1, beta2, beta3)`` for the E adaptor's EMA, m and v.
        eps: eps1, added to ``sqrt(v^)``.
        weight_decay: lambda, inside ``r`` (scaled by the trust ratio, as in Lamb).
        trust_eps: eps2, in the trust ratio's denominator.
        norm_eps: eps3, added to ``||theta||``.
        bias_correction: True for Algorithm 2, False for Algorithm 1 (ALTO vanilla).
        weight_decay_mask: which tensors get weight decay (``None``: all).
        trust_ratio_mask: which tensors get the trust ratio (``None``: all).
        allow_unstable: skip the stability rule (research use only).
        zero_norm_ratio: the trust ratio where ``||theta|| = 0`` or ``||r|| = 0`` (default 1, so that
            zero-initialised tensors train; a deviation from the paper, whose formula gives about
            ``norm_eps / ||r||`` there); ``None`` for the paper's formula everywhere.

    Example:
        >>> import numpy as np
        >>> from valley_core import alto, apply_updates
        >>> opt = alto(lr=0.05, alpha=-1.0, betas=(0.5, 0.9, 0.99), weight_decay=0.0)
        >>> params = (np.array([3.0, -2.0]),)
        >>> state = opt.init(params)
        >>> for _ in range(300):
        ...     updates, state = opt.update(tuple(2 * p for p in params), state, params)
        ...     params = apply_updates(params, updates)
        >>> bool(np.abs(params[0]).max() < 0.1)
        True

    References:
        Zhao et al., "Exploring Landscapes for Better Minima along Valleys", NeurIPS 2025.
    """
    beta1, beta2, beta3 = validate_hyperparameters(
        lr=lr,
        alpha=alpha,
        betas=betas,
        beta_names=_E3,
        eps=eps,
        weight_decay=weight_decay,
        trust_eps=trust_eps,
        norm_eps=norm_eps,
        bias_correction=bias_correction,
        allow_unstable=allow_unstable,
    )
    return _named(
        chain(
            *_lamb_chain(
                lr,
                (e_adaptor(alpha, beta1),),
                (beta2, beta3),
                eps,
                weight_decay,
                trust_eps,
                norm_eps,
                bias_correction,
                weight_decay_mask,
                trust_ratio_mask,
                zero_norm_ratio,
            )
        ),
        "alto",
    )


def alto_vanilla(
    lr: ScalarOrSchedule = 1e-3,
    alpha: ScalarOrSchedule = -5.0,
    betas: Tuple[float, float, float] = (0.99, 0.9, 0.99),
    eps: float = 1e-6,
    weight_decay: ScalarOrSchedule = 1e-4,
    trust_eps: float = 1e-6,
    norm_eps: float = 1e-10,
    weight_decay_mask: Mask = None,
    trust_ratio_mask: Mask = None,
    allow_unstable: bool = False,
    zero_norm_ratio: Optional[float] = 1.0,
) -> GradientTransformation:
    """ALTO without bias correction (the paper's Algorithm 1, the form its convex theorem is proved for).

    Same as ``alto(..., bias_correction=False)``; see ``alto`` for the maths and arguments.
    """
    return _named(
        alto(
            lr,
            alpha,
            betas,
            eps,
            weight_decay,
            trust_eps,
            norm_eps,
            False,
            weight_decay_mask,
            trust_ratio_mask,
            allow_unstable,
            zero_norm_ratio,
        ),
        "alto_vanilla",
    )


def lamb(
    lr: ScalarOrSchedule = 1e-3,
    betas: Tuple[float, float] = (0.9, 0.99),
    eps: float = 1e-6,
    weight_decay: ScalarOrSchedule = 1e-4,
    trust_eps: float = 1e-6,
    norm_eps: float = 1e-10,
    bias_correction: bool = True,
    weight_decay_mask: Mask = None,
    trust_ratio_mask: Mask = None,
    zero_norm_ratio: Optional[float] = 1.0,
) -> GradientTransformation:
    """Lamb in the paper's form: ALTO with ``alpha = 0`` (``betas = (beta2, beta3)`` for m and v).

    ``theta^(i) <- theta^(i) - lr r^(i) phi / (||r^(i)|| + trust_eps phi)``, ``r = m^/(sqrt(v^)+eps) + lambda theta``.
    """
    beta2, beta3 = validate_hyperparameters(
        lr=lr,
        betas=betas,
        beta_names=_MOMENTS,
        eps=eps,
        weight_decay=weight_decay,
        trust_eps=trust_eps,
        norm_eps=norm_eps,
        bias_correction=bias_correction,
    )
    return _named(
        chain(
            *_lamb_chain(
                lr,
                (),
                (beta2, beta3),
                eps,
                weight_decay,
                trust_eps,
                norm_eps,
                bias_correction,
                weight_decay_mask,
                trust_ratio_mask,
                zero_norm_ratio,
            )
        ),
        "lamb",
    )


def eadam(
    lr: ScalarOrSchedule = 1e-3,
    alpha: ScalarOrSchedule = 0.5,
    betas: Tuple[float, float, float] = (0.01, 0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    bias_correction: bool = True,
    allow_unstable: bool = False,
) -> GradientTransformation:
    """EAdam: the E adaptor in front of Adam.

    ``u = E(g + lambda theta)``; ``m, v`` from ``u``; ``theta <- theta - lr m^/(sqrt(v^)+eps)``.
    ``weight_decay`` is L2 regularisation added to the gradient before the adaptor (torch.optim.Adam's
    convention), so E sees differences of the regularised objective's gradient. Defaults: the paper's
    small-batch (exploiting) ``alpha = 0.5, beta1 = 0.01`` with Adam's usual ``(0.9, 0.999)`` and ``eps``.
    """
    beta1, beta2, beta3 = validate_hyperparameters(
        lr=lr,
        alpha=alpha,
        betas=betas,
        beta_names=_E3,
        eps=eps,
        weight_decay=weight_decay,
        bias_correction=bias_correction,
        allow_unstable=allow_unstable,
    )
    return _named(
        chain(
            add_decayed_weights(weight_decay),
            e_adaptor(alpha, beta1),
            scale_by_adam(beta2, beta3, eps, bias_correction),
            scale_by_learning_rate(lr),
        ),
        "eadam",
    )


def adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    bias_correction: bool = True,
) -> GradientTransformation:
    """Adam (L2 ``weight_decay`` added to the gradient, as torch.optim.Adam); EAdam with ``alpha = 0``."""
    beta2, beta3 = validate_hyperparameters(
        lr=lr, betas=betas, beta_names=_MOMENTS, eps=eps, weight_decay=weight_decay, bias_correction=bias_correction
    )
    return _named(
        chain(
            add_decayed_weights(weight_decay),
            scale_by_adam(beta2, beta3, eps, bias_correction),
            scale_by_learning_rate(lr),
        ),
        "adam",
    )


def eadamw(
    lr: ScalarOrSchedule = 1e-3,
    alpha: ScalarOrSchedule = 0.5,
    betas: Tuple[float, float, float] = (0.01, 0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-2,
    bias_correction: bool = True,
    weight_decay_mask: Mask = None,
    allow_unstable: bool = False,
) -> GradientTransformation:
    """EAdamW: EAdam with decoupled weight decay.

    ``theta <- theta - lr (m^/(sqrt(v^)+eps) + lambda theta)``, the same as torch.optim.AdamW's
    ``theta <- theta (1 - lr lambda) - lr m^/(sqrt(v^)+eps)`` up to round-off.
    """
    beta1, beta2, beta3 = validate_hyperparameters(
        lr=lr,
        alpha=alpha,
        betas=betas,
        beta_names=_E3,
        eps=eps,
        weight_decay=weight_decay,
        bias_correction=bias_correction,
        allow_unstable=allow_unstable,
    )
    return _named(
        chain(
            e_adaptor(alpha, beta1),
            scale_by_adam(beta2, beta3, eps, bias_correction),
            add_decayed_weights(weight_decay, weight_decay_mask),
            scale_by_learning_rate(lr),
        ),
        "eadamw",
    )


def adamw(
    lr: ScalarOrSchedule = 1e-3,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-2,
    bias_correction: bool = True,
    weight_decay_mask: Mask = None,
) -> GradientTransformation:
    """AdamW (decoupled weight decay); EAdamW with ``alpha = 0``."""
    beta2, beta3 = validate_hyperparameters(
        lr=lr, betas=betas, beta_names=_MOMENTS, eps=eps, weight_decay=weight_decay, bias_correction=bias_correction
    )
    return _named(
        chain(
            scale_by_adam(beta2, beta3, eps, bias_correction),
            add_decayed_weights(weight_decay, weight_decay_mask),
            scale_by_learning_rate(lr),
        ),
        "adamw",
    )


def esgd(
    lr: ScalarOrSchedule = 1e-2,
    alpha: ScalarOrSchedule = 0.5,
    betas: Tuple[float, float] = (0.01, 0.0),
    weight_decay: ScalarOrSchedule = 0.0,
    allow_unstable: bool = False,
) -> GradientTransformation:
    """ESGD: the E adaptor in front of heavy-ball SGD.

    ``u = E(g + lambda theta)``, ``m_k = beta2 m_{k-1} + u_k``, ``theta <- theta - lr m_k``
    (``betas = (beta1, beta2)``; ``beta2 = 0`` is plain SGD; L2 ``weight_decay`` as torch.optim.SGD).
    """
    beta1, beta2 = validate_hyperparameters(
        lr=lr,
        alpha=alpha,
        betas=betas,
        beta_names=("beta1", "beta2"),
        weight_decay=weight_decay,
        allow_unstable=allow_unstable,
    )
    return _named(
        chain(add_decayed_weights(weight_decay), e_adaptor(alpha, beta1), trace(beta2), scale_by_learning_rate(lr)),
        "esgd",
    )


def sgd(
    lr: ScalarOrSchedule = 1e-2, momentum: float = 0.0, weight_decay: ScalarOrSchedule = 0.0
) -> GradientTransformation:
    """SGD with heavy-ball momentum (torch.optim.SGD without dampening); ESGD with ``alpha = 0``."""
    (momentum,) = validate_hyperparameters(
        lr=lr, betas=(momentum,), beta_names=("momentum",), weight_decay=weight_decay
    )
    return _named(chain(add_decayed_weights(weight_decay), trace(momentum), scale_by_learning_rate(lr)), "sgd")


def adam_cm(
    lr: ScalarOrSchedule = 1e-3,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    top_c: int = 5,
    decay: float = 0.7,
    kappa: float = 1.0,
    synced: bool = True,
    critical_test: float = 0.0,
    weight_decay_mask: Mask = None,
) -> GradientTransformation:
    """Adam+CM: Adam with a buffer of critical momenta (the reference ``Adam_CM``; ``kappa=0`` is Adam).

    With ``k`` the 1-based step, ``C`` a buffer of at most ``top_c`` momenta with priorities ``p``::

        k = 1:  C = [g_1] with priority ||g_1||;  m, v stay 0;  theta <- theta - lr lambda theta
        k > 1:  m_k = beta1 m_{k-1} + (1 - beta1) g_k,   c_k = m_k + kappa mean(C)   (C before insertion)
                C gets m_k (priority ||g_k||): appended while not full, else replaces the lowest priority
                    if ||g_k|| > min(p)
                v_k = beta2 v_{k-1} + (1 - beta2) c_k^2
                theta <- theta - lr ((c_k / (1 - beta1^k)) / (sqrt(v_k / (1 - beta2^k)) + eps) + lambda theta)
        every step: p <- decay p

    ``||g_k||`` is the sum of the tensors' L2 norms (``synced=True``, the reference default) or each
    tensor's own norm. ``weight_decay`` is decoupled (as the reference: ``p *= 1 - lr lambda`` before the
    step), so ``kappa=0`` gives ``adam`` when ``weight_decay=0`` and ``adamw`` otherwise, exactly.
    Memory: ``top_c`` momenta per parameter on top of Adam's two, i.e. ``(2 + top_c)`` x the parameters.

    Deviations from the reference (chandar-lab/CMOptimizer ``Adam_CM``; details in
    ``valley_core.transforms.critical_momenta.scale_by_adam_critical_momenta``): ``kappa`` scales the buffer
    mean (the reference only switches on ``kappa > 0``; ``kappa=1`` is the reference) and ``kappa=0`` is
    Adam (the reference raises); ``critical_test`` is 0.0 or 1.0 only (no random mix); no ``amsgrad``,
    ``buffer_dtype`` or param groups. The first step reproduces the reference: it stores ``g_1`` and does
    not move the parameters (apart from the weight decay).

    Args:
        lr: learning rate.
        betas: ``(beta1, beta2)`` for m and v.
        eps: added to ``sqrt(v^)``.
        weight_decay: decoupled decay ``lambda``.
        top_c: buffer capacity (``topC``), an integer >= 1.
        decay: priority decay per step, in ``[0, 1]``.
        kappa: weight of the buffer mean; ``0`` is Adam(W).
        synced: priority key = sum of every tensor's gradient norm (True) or the tensor's own norm (False).
        critical_test: ``0.0`` replace the lowest priority when beaten; ``1.0`` always overwrite slot 0.
        weight_decay_mask: which tensors get weight decay (``None``: all).

    Example:
        >>> import numpy as np
        >>> from valley_core import adam_cm, apply_updates
        >>> opt = adam_cm(lr=0.05)
        >>> params = (np.array([3.0, -2.0]),)
        >>> state = opt.init(params)
        >>> for _ in range(400):
        ...     updates, state = opt.update(tuple(2 * p for p in params), state, params)
        ...     params = apply_updates(params, updates)
        >>> bool(np.abs(params[0]).max() < 0.1)
        True

    References:
        Malviya et al., "Promoting Exploration in Memory-Augmented Adam using Critical Momenta", TMLR 2024.
    """
    beta1, beta2 = validate_hyperparameters(
        lr=lr,
        betas=betas,
        beta_names=("beta1", "beta2"),
        eps=eps,
        weight_decay=weight_decay,
        top_c=top_c,
        decay=decay,
        kappa=kappa,
        critical_test=critical_test,
        synced=synced,
    )
    return _named(
        chain(
            scale_by_adam_critical_momenta(
                beta1, beta2, eps, top_c, float(decay), float(kappa), synced, float(critical_test)
            ),
            add_decayed_weights(weight_decay, weight_decay_mask),
            scale_by_learning_rate(lr),
        ),
        "adam_cm",
    )


def eadam_cm(
    lr: ScalarOrSchedule = 1e-3,
    alpha: ScalarOrSchedule = 0.5,
    betas: Tuple[float, float, float] = (0.01, 0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    top_c: int = 5,
    decay: float = 0.7,
    kappa: float = 1.0,
    synced: bool = True,
    critical_test: float = 0.0,
    weight_decay_mask: Mask = None,
    allow_unstable: bool = False,
) -> GradientTransformation:
    """The E adaptor in front of Adam+CM: ``adam_cm`` run on ``u_k = g_k + alpha a_k``.

    ``a_k = beta1 a_{k-1} + (1 - beta1)(g_k - g_{k-1})`` as in ``eadam``; Adam+CM (see ``adam_cm``) then
    sees ``u_k`` as its gradient everywhere, including the priority key ``||u_k||`` and the raw ``u_1``
    stored on the first step. ``betas = (beta1, beta2, beta3)``: the E adaptor's EMA, m and v. Decoupled
    weight decay as in ``adam_cm``. ``alpha = 0`` is ``adam_cm`` exactly. Neither paper defines this
    combination; it is offered so that the two exploration mechanisms can be compared and combined.
    """
    beta1, beta2, beta3 = validate_hyperparameters(
        lr=lr,
        alpha=alpha,
        betas=betas,
        beta_names=_E3,
        eps=eps,
        weight_decay=weight_decay,
        top_c=top_c,
        decay=decay,
        kappa=kappa,
        critical_test=critical_test,
        synced=synced,
        allow_unstable=allow_unstable,
    )
    return _named(
        chain(
            e_adaptor(alpha, beta1),
            scale_by_adam_critical_momenta(
                beta2, beta3, eps, top_c, float(decay), float(kappa), synced, float(critical_test)
            ),
            add_decayed_weights(weight_decay, weight_decay_mask),
            scale_by_learning_rate(lr),
        ),
        "eadam_cm",
    )
