"""Keras quick start: train a small network on scikit-learn's digits with valley's ALTO.

Run from a checkout (any Keras backend; TensorFlow by default)::

    .venv/bin/python examples/keras_quickstart.py
    KERAS_BACKEND=torch .venv/bin/python examples/keras_quickstart.py --epochs 5

It trains the same 64-128-10 MLP (same initial weights) with ``backends.keras.ALTO`` and with
``keras.optimizers.AdamW``, prints the test accuracy of both, then saves the ALTO model to ``.keras``,
loads it back with its optimizer state, and trains one more epoch from where it stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import valley_core as vc  # noqa: E402
from backends.keras import ALTO  # noqa: E402


def make_model() -> keras.Model:
    keras.utils.set_random_seed(0)  # the same initial weights for every optimizer
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target, test_size=0.25, random_state=0, stratify=data.target
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    # The paper's defaults for this batch size (alpha > 0 below batch 1024, alpha < 0 from 1024 on).
    hyperparameters = vc.defaults_for_batch_size(args.batch_size)
    alto = ALTO(
        learning_rate=1e-2,
        **hyperparameters,
        # Biases start at zero: the paper's trust ratio would keep them there (phi = norm_eps).
        weight_decay_exclude_names=["bias"],
        trust_ratio_exclude_names=["bias"],
    )
    optimizers = {"ALTO": alto, "AdamW": keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=1e-4)}

    models = {}
    for name, optimizer in optimizers.items():
        model = make_model()
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile="auto")
        model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, verbose=0)
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        print(f"{name:6s} test accuracy after {args.epochs} epochs: {accuracy:.4f}")
        models[name] = model

    # Save, load (the optimizer and its state come back), and continue training.
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "alto_digits.keras")
        models["ALTO"].save(path)
        restored = keras.models.load_model(path)
    print(
        f"restored optimizer: {type(restored.optimizer).__name__}, "
        f"{int(keras.ops.convert_to_numpy(restored.optimizer.iterations))} steps taken, "
        f"hyperparameters {dict(restored.optimizer.hyperparameters)}"
    )
    restored.fit(x_train, y_train, batch_size=args.batch_size, epochs=1, verbose=0)
    _, accuracy = restored.evaluate(x_test, y_test, verbose=0)
    print(f"ALTO   test accuracy after one more epoch: {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
