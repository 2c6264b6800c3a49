"""The paper's recommended hyperparameters (Section 5 of the paper; ``shared/design/algorithm.md`` §3)."""

from __future__ import annotations

from typing import Any, Dict

#: The batch size from which the paper switches to its large-batch (exploring) defaults.
LARGE_BATCH_THRESHOLD = 1024


def defaults_for_batch_size(batch_size: int) -> Dict[str, Any]:
    """The paper's ALTO defaults for a given batch size, as keyword arguments of ``valley_core.alto``.

    Below 1024 the paper exploits (``alpha = 0.5, beta1 = 0.01``); from 1024 on it explores
    (``alpha = -5, beta1 = 0.99``). The learning rate is not part of the table (the paper used 1e-3 at
    batch 256 and 1e-2 at batch 4096) and is not returned.

    Example:
        >>> defaults_for_batch_size(4096)["alpha"]
        -5.0
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} violates batch_size is a positive integer")
    large = batch_size >= LARGE_BATCH_THRESHOLD
    return {
        "alpha": -5.0 if large else 0.5,
        "betas": (0.99 if large else 0.01, 0.9, 0.99),
        "eps": 1e-6,
        "trust_eps": 1e-6,
        "norm_eps": 1e-10,
        "weight_decay": 1e-4,
    }
