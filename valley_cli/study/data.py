"""The study's data: MNIST-1D generated offline, scikit-learn's digits, and standard-library text.

MNIST-1D (Greydanus, 2020) is made by the ``mnist1d`` package's own generator (``mnist1d.data.make_dataset``):
ten 1-D templates, each padded, sheared, scaled, translated and given correlated and i.i.d. noise, then
resampled to 40 points. Only the generator is called, never ``get_dataset`` (which downloads a pickle by
default). The result depends only on the arguments and the seed; it is cached on disk as ``.npz``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import sysconfig
import tempfile
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

#: MNIST-1D sizes of the study: 50k training, 5k validation, 5k test samples (one generated set of 60k, split
#: by position after the generator's own shuffle).
MNIST1D_TRAIN = 50_000
MNIST1D_VALIDATION = 5_000
MNIST1D_TEST = 5_000
#: The generator's seed (fixed: the data set is part of the protocol).
MNIST1D_SEED = 42
#: Size of the validation and of the test split of digits (the rest, 1197 images, is the training split).
DIGITS_VALIDATION = 300
DIGITS_TEST = 300
#: Environment variable naming the cache folder (default ``~/.cache/valley``).
CACHE_ENV = "VALLEY_CACHE"


class ClassificationSplit(NamedTuple):
    """A fixed train/validation/test split (inputs float32, labels int64)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def cache_dir() -> str:
    """The folder where generated data are cached: ``$VALLEY_CACHE`` or ``~/.cache/valley``."""
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "valley")


def generate_mnist1d(num_samples: int, seed: int = MNIST1D_SEED) -> Tuple[np.ndarray, np.ndarray]:
    """Generates ``num_samples`` MNIST-1D examples with the package's generator (no network access).

    ``make_dataset`` seeds NumPy's and Python's global generators; their states are restored afterwards so
    that generating data does not change the caller's random streams.

    Args:
        num_samples: examples to generate (a multiple of 10: the generator makes equal numbers per class).
        seed: the generator's seed.

    Returns:
        ``(x, y)``: ``x`` float32 of shape ``(num_samples, 40)`` (standardised over the whole set by the
        generator), ``y`` int64 labels 0-9, in the generator's shuffled order.

    Raises:
        ValueError: if ``num_samples`` is not a positive multiple of 10.
    """
    if num_samples < 10 or num_samples % 10:
        raise ValueError(f"num_samples={num_samples} violates num_samples is a positive multiple of 10")
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    args.train_split = 1.0  # everything in "x"; the study splits it itself
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return np.asarray(data["x"], dtype=np.float32), np.asarray(data["y"], dtype=np.int64)


def _split(x: np.ndarray, y: np.ndarray, n_train: int, n_val: int, n_test: int) -> ClassificationSplit:
    a, b, c = n_train, n_train + n_val, n_train + n_val + n_test
    return ClassificationSplit(x[:a], y[:a], x[a:b], y[a:b], x[b:c], y[b:c])


def load_mnist1d(
    n_train: int = MNIST1D_TRAIN,
    n_val: int = MNIST1D_VALIDATION,
    n_test: int = MNIST1D_TEST,
    seed: int = MNIST1D_SEED,
    cache: Optional[str] = None,
) -> ClassificationSplit:
    """MNIST-1D split by position into train, validation and test; generated once, then read from the cache.

    Args:
        n_train: training examples.
        n_val: validation examples.
        n_test: test examples (``n_train + n_val + n_test`` must be a multiple of 10).
        seed: the generator's seed.
        cache: cache folder (``None``: ``cache_dir()``); an empty string disables the cache.

    Returns:
        A ``ClassificationSplit``.
    """
    total = n_train + n_val + n_test
    folder = cache_dir() if cache is None else cache
    key = json.dumps({"total": total, "seed": seed, "generator": "mnist1d.make_dataset", "version": 1})
    name = f"mnist1d-{total}-{seed}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.npz"
    path = os.path.join(folder, name) if folder else ""
    if path and os.path.exists(path):
        stored_xy = _read_npz(path, total)
        if stored_xy is not None:
            return _split(*stored_xy, n_train, n_val, n_test)
    x, y = generate_mnist1d(total, seed)
    if path:
        os.makedirs(folder, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".npz")
        os.close(handle)
        np.savez(temporary, x=x, y=y)
        os.replace(temporary, path)  # atomic: a concurrent or interrupted writer never leaves half a file
    return _split(x, y, n_train, n_val, n_test)


def _read_npz(path: str, total: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The cached ``(x, y)`` of ``path``; ``None`` (after a warning naming the file) if it is unreadable or
    not what the name promises, so that the caller generates the data again and replaces the file."""
    try:
        with np.load(path) as stored:
            x, y = np.asarray(stored["x"]), np.asarray(stored["y"])
        if x.shape != (total, 40) or y.shape != (total,):
            raise ValueError(f"shapes {x.shape} and {y.shape}, expected ({total}, 40) and ({total},)")
        return x.astype(np.float32, copy=False), y.astype(np.int64, copy=False)
    except Exception as error:  # noqa: BLE001 - zipfile, pickle and OS errors all mean "regenerate"
        print(
            f"valley: warning: the cached MNIST-1D file {path} is unreadable ({type(error).__name__}: {error}); "
            "generating the data again",
            file=sys.stderr,
        )
        return None


def load_digits_split() -> ClassificationSplit:
    """scikit-learn's bundled digits (1797 8x8 images, pixels scaled to [0, 1]), split deterministically.

    Stratified and seeded with a constant: 300 test, 300 validation and 1197 training images on every machine.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=DIGITS_TEST, random_state=0, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=DIGITS_VALIDATION, random_state=0, stratify=y_rest
    )
    return ClassificationSplit(x_train, y_train, x_val, y_val, x_test, y_test)


#: Python standard-library files the language model reads, in this order (missing ones are skipped and listed).
LM_FILES = (
    "argparse.py",
    "ast.py",
    "calendar.py",
    "collections/__init__.py",
    "configparser.py",
    "csv.py",
    "dataclasses.py",
    "difflib.py",
    "enum.py",
    "fractions.py",
    "functools.py",
    "heapq.py",
    "inspect.py",
    "json/decoder.py",
    "json/encoder.py",
    "os.py",
    "pprint.py",
    "random.py",
    "shutil.py",
    "statistics.py",
    "string.py",
    "textwrap.py",
    "threading.py",
    "tokenize.py",
    "traceback.py",
)
#: Characters outside ASCII are mapped to this code point; the vocabulary is the 128 ASCII codes.
LM_VOCAB = 128
LM_UNKNOWN = ord("?")


def load_stdlib_text(files: Sequence[str] = LM_FILES) -> Tuple[Dict[str, np.ndarray], List[Tuple[str, int]]]:
    """Reads standard-library files and splits each one 90/5/5 (train/validation/test) by position.

    Returns:
        ``({"train": codes, "val": codes, "test": codes}, [(file, characters), ...])`` with ``uint8`` ASCII
        codes (other characters become ``?``).

    Raises:
        FileNotFoundError: if none of the files exists.
    """
    root = sysconfig.get_paths()["stdlib"]
    pieces: Dict[str, List[np.ndarray]] = {"train": [], "val": [], "test": []}
    used: List[Tuple[str, int]] = []
    for name in files:
        path = os.path.join(root, name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        codes = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8).copy()
        codes[codes >= LM_VOCAB] = LM_UNKNOWN
        a, b = int(len(codes) * 0.90), int(len(codes) * 0.95)
        pieces["train"].append(codes[:a])
        pieces["val"].append(codes[a:b])
        pieces["test"].append(codes[b:])
        used.append((name, len(codes)))
    if not used:
        raise FileNotFoundError(f"none of the language-model files exist under {root}")
    return {key: np.concatenate(value) for key, value in pieces.items()}, used
