"""The named PyTorch optimizers: one line each over ``valley_core``'s factories.

To add an optimizer that exists in ``valley_core`` (``vc.adam_cm``, say), add one line here and its name to
``backends/torch/__init__.py``::

    AdamCM = optimizer_class("AdamCM", vc.adam_cm)
"""

from __future__ import annotations

from typing import Any, Callable

import valley_core as vc
from backends.torch.valley_optimizer import optimizer_class

_ZERO_NORM = "docs/algorithm.md#the-trust-ratio-where-a-norm-is-zero-our-one-deviation-from-the-papers-formula"
_AUTHORS = "docs/algorithm.md#how-the-authors-code-differs-e-optimizer-adaptor-010"
_DEVIATION = (
    "Deviation from the paper's formula: a trust ratio of ``zero_norm_ratio`` (default 1.0) where ``||theta||`` or\n"
    f"``||r||`` is zero ({_ZERO_NORM});\n``zero_norm_ratio=None`` is the paper's formula. How the authors' code "
    f"differs: {_AUTHORS}."
)
_MATHS = (
    "The maths (per tensor ``theta``): docs/algorithm.md#the-optimizers-valley_coreoptimizerspy and ``valley_core.{}``."
)


def _doc(summary: str, core: Callable[..., Any], extra: str) -> str:
    return f"{summary}\n\n{_MATHS.format(core.__name__)}\n\n{extra}"


_ALTO_DOC = _doc(
    "ALTO: the E adaptor applied to Lamb (the paper's Algorithm 2; three buffers per parameter: carry, m, v).",
    vc.alto,
    _DEVIATION
    + """

Args:
    params: tensors or param-group dicts.
    trust_ratio: per group; False skips the trust ratio for that group (``param_groups.lamb_param_groups``
        turns it off for biases and norms, as the authors' code does for groups without weight decay).
    The other hyperparameters are ``valley_core.alto``'s, per group.

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
""",
)
_ALTO_VANILLA_DOC = _doc(
    "ALTO without bias correction (the paper's Algorithm 1): :class:`ALTO` with ``bias_correction=False``.",
    vc.alto_vanilla,
    _DEVIATION,
)
_LAMB_DOC = _doc("Lamb in the paper's form: ALTO with ``alpha = 0``, ``betas = (beta2, beta3)``.", vc.lamb, _DEVIATION)
_EADAM_DOC = _doc(
    "EAdam: the E adaptor in front of Adam with L2 weight decay (``alpha = 0`` is ``torch.optim.Adam``).",
    vc.eadam,
    "Deviations from the paper: none; E sees the L2-regularised gradient ``g + weight_decay theta``.",
)
_EADAMW_DOC = _doc(
    "EAdamW: EAdam with decoupled weight decay (``alpha = 0`` is ``torch.optim.AdamW`` up to round-off).",
    vc.eadamw,
    "Deviations from the paper: none.",
)
_ESGD_DOC = _doc(
    "ESGD: the E adaptor in front of heavy-ball SGD, ``betas = (beta1, momentum)`` (``alpha = 0`` is\n"
    "``torch.optim.SGD`` without dampening; L2 weight decay added to the gradient ``g + weight_decay theta``).",
    vc.esgd,
    "Deviations from the paper: none.",
)

ALTO = optimizer_class("ALTO", vc.alto, doc=_ALTO_DOC, module="backends.torch")
ALTOVanilla = optimizer_class("ALTOVanilla", vc.alto_vanilla, doc=_ALTO_VANILLA_DOC, module="backends.torch")
Lamb = optimizer_class("Lamb", vc.lamb, doc=_LAMB_DOC, module="backends.torch")
EAdam = optimizer_class("EAdam", vc.eadam, doc=_EADAM_DOC, module="backends.torch")
EAdamW = optimizer_class("EAdamW", vc.eadamw, doc=_EADAMW_DOC, module="backends.torch")
ESGD = optimizer_class("ESGD", vc.esgd, doc=_ESGD_DOC, module="backends.torch")
AdamCM = optimizer_class("AdamCM", vc.adam_cm, module="backends.torch")

__all__ = ["ALTO", "ALTOVanilla", "AdamCM", "EAdam", "EAdamW", "ESGD", "Lamb"]
