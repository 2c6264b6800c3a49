"""Writes the Keras checkpoints of valley 0.1.0's optimizer-variable layout that the load test reads.

Run ONCE against the code of commit d24396a (the Keras code before issue 23), from a checkout of it::

    KERAS_BACKEND=tensorflow .venv/bin/python tests/keras/data/make_legacy_fixtures.py OUT_ROOT

It writes ``OUT_ROOT/tests/keras/data/keras_checkpoints_valley_0.1.0.pkl.gz`` (gzip: the HDF5 files are mostly
padding): for each optimizer class a ``model.save`` file (``.keras`` bytes) of a tiny model after 3 steps, the
4th step's batch, and the weights and optimizer variables after the 4th step as that code computed them. The
test loads each file with today's code, takes the 4th step and compares. Kept for the record; it cannot
regenerate the file with later code (that would test nothing).
"""

import gzip
import os
import pickle
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

from backends.keras import ALTO, ESGD, AdamCM, ALTOVanilla, EAdam, EAdamW, Lamb

STEPS = 3
OPTIMIZERS = {
    "ALTO": lambda: ALTO(
        learning_rate=0.01,
        alpha=-0.5,
        betas=(0.5, 0.9, 0.99),
        weight_decay=1e-3,
        weight_decay_exclude_names=["bias"],
        trust_ratio_exclude_names=["bias"],
    ),
    "ALTOVanilla": lambda: ALTOVanilla(learning_rate=0.01, alpha=0.5, betas=(0.01, 0.9, 0.99)),
    "Lamb": lambda: Lamb(learning_rate=0.01),
    "EAdam": lambda: EAdam(learning_rate=0.01, weight_decay=1e-3),
    "EAdamW": lambda: EAdamW(learning_rate=0.01, alpha=-0.5, betas=(0.5, 0.9, 0.999)),
    "ESGD": lambda: ESGD(learning_rate=0.01, betas=(0.01, 0.9)),
    "AdamCM": lambda: AdamCM(learning_rate=0.01, top_c=2),
}


def case(make_optimizer):
    rng = np.random.default_rng(5)
    batches = [
        (rng.normal(size=(8, 4)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")) for _ in range(STEPS + 1)
    ]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(2)])
    model.compile(optimizer=make_optimizer(), loss="mse", jit_compile=False)
    for x, y in batches[:STEPS]:
        model.train_on_batch(x, y)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.keras")
        model.save(path)
        saved = Path(path).read_bytes()
    x, y = batches[STEPS]
    model.train_on_batch(x, y)
    return {
        "keras": saved,
        "x": x,
        "y": y,
        "weights_after": [np.asarray(w) for w in model.get_weights()],
        "optimizer_variables_after": {v.path: keras.ops.convert_to_numpy(v) for v in model.optimizer.variables},
    }


if __name__ == "__main__":
    assert keras.backend.backend() == "tensorflow"
    out = Path(sys.argv[1]) / "tests" / "keras" / "data" / "keras_checkpoints_valley_0.1.0.pkl.gz"
    cases = {name: case(make) for name, make in OPTIMIZERS.items()}
    out.write_bytes(gzip.compress(pickle.dumps({"keras": keras.__version__, "cases": cases}, protocol=4), mtime=0))
    print(out, out.stat().st_size, "bytes")
