"""The first edition's MNIST-1D / LM sizes, kept for ``benchmarks/compact_state_quality.py`` only.

The study itself (second edition) is defined in ``valley_cli.study.protocol``; nothing here is a protocol.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple


@dataclasses.dataclass
class StudyConfig:
    """The first edition's sizes: MLP 40-64-64-10 on 50k MNIST-1D examples, batch up to 16384 at 100 epochs,
    and the character LM ``(d_model, heads, layers, feed-forward, context)`` at 32 and 64 sequences, 500 steps."""

    batch_sizes: Tuple[int, ...] = (128, 1024, 4096, 16384)
    epochs: Dict[int, int] = dataclasses.field(default_factory=lambda: {128: 1, 1024: 6, 4096: 25, 16384: 100})
    n_train: int = 50_000
    n_val: int = 5_000
    n_test: int = 5_000
    hidden: Tuple[int, ...] = (64, 64)
    lm_batch_sizes: Tuple[int, ...] = (32, 64)
    lm_steps: int = 500
    lm_size: Tuple[int, int, int, int, int] = (32, 2, 1, 64, 32)
    lm_eval_windows: int = 256
