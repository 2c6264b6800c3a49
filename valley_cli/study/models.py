"""The study's models (torch): an MLP for MNIST-1D and digits, and a small character-level transformer.

Each builder returns a fresh ``torch.nn.Module``; call it under ``torch.manual_seed`` for a seeded
initialisation (the study seeds it so that every optimizer starts from the same weights for a given seed).
"""

from __future__ import annotations

from typing import Any, Sequence, Tuple

from valley_cli.study.data import LM_VOCAB

#: Hidden widths of the MNIST-1D MLP (40-64-64-10, 7.4k parameters): chosen for the CPU budget (a step at batch
#: 16384 costs about 0.03 s on a quiet core); the study compares optimizers on the same model, not model families.
MNIST1D_HIDDEN = (64, 64)
#: Hidden widths of the digits MLP (64-128-128-10).
DIGITS_HIDDEN = (128, 128)
#: The language model: (d_model, heads, layers, feed-forward width, context).
LM_SIZE = (32, 2, 1, 64, 32)


def mlp(sizes: Sequence[int]) -> Any:
    """A ReLU MLP with layer widths ``sizes`` (input first, classes last), ``torch.nn.Linear`` initialisation."""
    import torch.nn as nn

    layers: list = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def char_transformer(size: Tuple[int, int, int, int, int] = LM_SIZE) -> Any:
    """A causal pre-norm transformer over ASCII characters with learned positions.

    Args:
        size: ``(d_model, heads, layers, feed-forward width, context)``.
    """
    import torch
    import torch.nn as nn

    d_model, heads, n_layers, feed_forward, context = size

    class CharTransformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(LM_VOCAB, d_model)
            self.position = nn.Parameter(torch.randn(context, d_model) * 0.02)
            layer = nn.TransformerEncoderLayer(
                d_model, heads, feed_forward, dropout=0.0, batch_first=True, norm_first=True
            )
            self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, LM_VOCAB)
            self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

        def forward(self, tokens):
            length = tokens.shape[1]
            h = self.embed(tokens) + self.position[:length]
            h = self.blocks(h, mask=self.mask[:length, :length], is_causal=True)
            return self.head(self.norm(h))

    return CharTransformer()


def cnn1d(channels: int = 16, length: int = 40, classes: int = 10) -> Any:
    """A small 1-D CNN for MNIST-1D: conv 5 (stride 1), two conv 3 (stride 2), ReLU after each, a linear head.

    With 16 channels it has 3.3k parameters and fits 2000 MNIST-1D training examples exactly; a step costs
    about 14 microseconds per example on one CPU core.

    Args:
        channels: channels of every convolution.
        length: input length (40 for MNIST-1D).
        classes: output classes.
    """
    import torch.nn as nn

    return nn.Sequential(
        nn.Unflatten(1, (1, length)),
        nn.Conv1d(1, channels, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(channels * ((length + 3) // 4), classes),
    )


def build(model: Sequence[Any], inputs: int = 40, classes: int = 10) -> Any:
    """Builds a model from its description in a study spec.

    Args:
        model: ``("cnn", channels)``, ``("mlp", *hidden)`` or ``("transformer", d_model, heads, layers,
            feed_forward, context)``.

    Raises:
        ValueError: for an unknown kind.
    """
    kind, *sizes = model
    if kind == "cnn":
        return cnn1d(int(sizes[0]), inputs, classes)
    if kind == "mlp":
        return mlp((inputs, *[int(s) for s in sizes], classes))
    if kind == "transformer":
        return char_transformer(tuple(int(s) for s in sizes))  # type: ignore[arg-type]
    raise ValueError(f"model kind {kind!r} is not one of cnn, mlp, transformer")
