"""PyTorch adapter: drop-in ``torch.optim.Optimizer`` classes that execute ``valley_core``.

    >>> import torch
    >>> from backends.torch import ALTO
    >>> model = torch.nn.Linear(3, 1)
    >>> optimizer = ALTO(model.parameters(), lr=1e-3)

- :class:`ALTO`, :class:`ALTOVanilla`, :class:`Lamb`, :class:`EAdam`, :class:`EAdamW`, :class:`ESGD`: the core's
  optimizers (same hyperparameter names and defaults as ``valley_core.alto`` ...), per-group hyperparameters.
- :class:`E`: the E adaptor in front of any torch optimizer, with its own state in the checkpoint.
- :func:`lamb_param_groups`: no weight decay for biases and norms, an explicit per-group trust-ratio switch.
- :func:`optimizer_class`: a torch optimizer from any ``valley_core`` factory, in one line.

See ``docs/torch.md``.
"""

from backends.torch.dispatch import IMPLEMENTATIONS
from backends.torch.e_wrapper import E
from backends.torch.named import ALTO, ESGD, AdamCM, ALTOVanilla, EAdam, EAdamW, Lamb
from backends.torch.param_groups import NORM_TYPES, core_masks, lamb_param_groups, split_parameters
from backends.torch.valley_optimizer import ValleyOptimizer, optimizer_class

__all__ = [
    "ALTO",
    "ALTOVanilla",
    "AdamCM",
    "E",
    "EAdam",
    "EAdamW",
    "ESGD",
    "IMPLEMENTATIONS",
    "Lamb",
    "NORM_TYPES",
    "ValleyOptimizer",
    "core_masks",
    "lamb_param_groups",
    "optimizer_class",
    "split_parameters",
]
