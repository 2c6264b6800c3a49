"""Integration tests: valley's torch optimizers inside the training loops people use (the ``integrations`` extra)."""

import os

import pytest

# Nothing here may reach the network: the models are built from configs, the data is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

pytest.importorskip("torch")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integrations/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)
