"""The named PyTorch optimizers: one line each over ``valley_core``'s factories.

To add an optimizer that exists in ``valley_core`` (``vc.adam_cm``, say), add one line here and its name to
``backends/torch/__init__.py``::

    AdamCM = optimizer_class("AdamCM", vc.adam_cm)
"""

from __future__ import annotations

import valley_core as vc
from backends.torch.valley_optimizer import optimizer_class

_ALTO_DOC = """ALTO: the E adaptor applied to Lamb (the paper's Algorithm 2).

For every parameter tensor ("layer") ``theta`` with gradient ``g_k``::

    a_k = beta1 a_{k-1} + (1 - beta1)(g_k - g_{k-1})          u_k = g_k + alpha a_k
    m_k = beta2 m_{k-1} + (1 - beta2) u_k                     v_k = beta3 v_{k-1} + (1 - beta3) u_k^2
    r_k = (m_k / (1 - beta2^k)) / (sqrt(v_k / (1 - beta3^k)) + eps) + weight_decay theta_k
    theta_{k+1} = theta_k - lr r_k phi / (||r_k|| + trust_eps phi),    phi = ||theta_k|| + norm_eps

``a`` is stored in one buffer (``EState.carry``), so the state is three buffers per parameter (carry, m,
v): 3x the parameter bytes (float32 buffers for bfloat16/float16 parameters).

Deviations from the paper: none in the maths. Additions: the per-group ``trust_ratio`` switch (the paper
applies the trust ratio to every tensor; ``param_groups.lamb_param_groups`` turns it off for biases and
norms, as the authors' code does for groups without weight decay). Unlike the authors' code
(``e-optimizer-adaptor``): no hidden gradient clipping to norm 1, the trust ratio does not depend on the
weight decay, ``trust_eps``/``norm_eps`` are used, no host synchronisation per tensor, 3 buffers instead of 6.

Args:
    params: tensors or param-group dicts.
    lr: learning rate (the paper: 1e-3 at batch 256, 1e-2 at batch 4096).
    alpha: exploration coefficient (< 0 explores, > 0 exploits); ``|alpha| < 1/(1 - beta1)`` is enforced
        unless ``allow_unstable=True``.
    betas: ``(beta1, beta2, beta3)``: the E adaptor's EMA, m and v.
    eps: added to ``sqrt(v^)``.
    weight_decay: inside ``r`` (scaled by the trust ratio, as in Lamb).
    trust_eps: in the trust ratio's denominator.
    norm_eps: added to ``||theta||``.
    bias_correction: True (Algorithm 2) or False (Algorithm 1).
    allow_unstable: skip the stability rule (research use).
    trust_ratio: per group; False skips the trust ratio for that group.

Example:
    >>> import torch
    >>> from backends.torch import ALTO
    >>> w = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    >>> opt = ALTO([w], lr=0.05, alpha=-1.0, betas=(0.5, 0.9, 0.99), weight_decay=0.0, implementation="core")
    >>> for _ in range(300):
    ...     opt.zero_grad()
    ...     (w ** 2).sum().backward()
    ...     _ = opt.step()
    >>> bool(w.abs().max() < 0.1)
    True

References:
    Zhao et al., "Exploring Landscapes for Better Minima along Valleys", NeurIPS 2025 (arXiv 2510.27153).
"""

_ALTO_VANILLA_DOC = """ALTO without bias correction (the paper's Algorithm 1).

Same as :class:`ALTO` with ``m^ = m`` and ``v^ = v``::

    r_k = m_k / (sqrt(v_k) + eps) + weight_decay theta_k
    theta_{k+1} = theta_k - lr r_k phi / (||r_k|| + trust_eps phi),    phi = ||theta_k|| + norm_eps

Deviations from the paper: none in the maths (see :class:`ALTO` for the additions).
"""

_LAMB_DOC = """Lamb in the paper's form (ALTO with ``alpha = 0``; ``betas = (beta2, beta3)``)::

    m_k = beta2 m + (1 - beta2) g_k          v_k = beta3 v + (1 - beta3) g_k^2
    r_k = m^_k / (sqrt(v^_k) + eps) + weight_decay theta_k
    theta_{k+1} = theta_k - lr r_k phi / (||r_k|| + trust_eps phi),    phi = ||theta_k|| + norm_eps

Deviation from You et al.'s Lamb: the trust ratio has ``trust_eps``/``norm_eps`` instead of a special case for
zero norms and no clipping function on ``||theta||``. Two buffers per parameter (m, v).
"""

_EADAM_DOC = """EAdam: the E adaptor in front of Adam::

    g_k <- g_k + weight_decay theta_k                     (L2, as torch.optim.Adam)
    a_k = beta1 a_{k-1} + (1 - beta1)(g_k - g_{k-1}),  u_k = g_k + alpha a_k
    m_k = beta2 m + (1 - beta2) u_k,  v_k = beta3 v + (1 - beta3) u_k^2
    theta_{k+1} = theta_k - lr m^_k / (sqrt(v^_k) + eps)

``alpha = 0`` is ``torch.optim.Adam`` (tested against it). Deviations from the paper: none; the E adaptor sees
the L2-regularised gradient. Three buffers per parameter (carry, m, v).
"""

_EADAMW_DOC = """EAdamW: EAdam with decoupled weight decay::

    a_k = beta1 a_{k-1} + (1 - beta1)(g_k - g_{k-1}),  u_k = g_k + alpha a_k
    m_k, v_k as in Adam from u_k
    theta_{k+1} = theta_k - lr (m^_k / (sqrt(v^_k) + eps) + weight_decay theta_k)

``alpha = 0`` is ``torch.optim.AdamW`` up to round-off (tested against it). Deviations from the paper: none.
"""

_ESGD_DOC = """ESGD: the E adaptor in front of heavy-ball SGD (``betas = (beta1, beta2)``)::

    g_k <- g_k + weight_decay theta_k                     (L2, as torch.optim.SGD)
    a_k = beta1 a_{k-1} + (1 - beta1)(g_k - g_{k-1}),  u_k = g_k + alpha a_k
    m_k = beta2 m_{k-1} + u_k                             (beta2 = 0: plain SGD)
    theta_{k+1} = theta_k - lr m_k

``alpha = 0`` is ``torch.optim.SGD(momentum=beta2)`` without dampening. Deviations from the paper: none.
"""

ALTO = optimizer_class("ALTO", vc.alto, doc=_ALTO_DOC, module="backends.torch")
ALTOVanilla = optimizer_class("ALTOVanilla", vc.alto_vanilla, doc=_ALTO_VANILLA_DOC, module="backends.torch")
Lamb = optimizer_class("Lamb", vc.lamb, doc=_LAMB_DOC, module="backends.torch")
EAdam = optimizer_class("EAdam", vc.eadam, doc=_EADAM_DOC, module="backends.torch")
EAdamW = optimizer_class("EAdamW", vc.eadamw, doc=_EADAMW_DOC, module="backends.torch")
ESGD = optimizer_class("ESGD", vc.esgd, doc=_ESGD_DOC, module="backends.torch")
AdamCM = optimizer_class("AdamCM", vc.adam_cm, module="backends.torch")

__all__ = ["ALTO", "ALTOVanilla", "AdamCM", "EAdam", "EAdamW", "ESGD", "Lamb"]
