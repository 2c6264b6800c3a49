"""The examples in the torch backend's docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "backends.torch",
    "backends.torch.valley_optimizer",
    "backends.torch.named",
    "backends.torch.e_wrapper",
    "backends.torch.param_groups",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    extra = {"ALTO": module.ALTO} if name == "backends.torch.named" else {}
    failures, _ = doctest.testmod(module, extraglobs=extra, optionflags=doctest.ELLIPSIS)
    assert failures == 0


def test_every_optimizer_docstring_shows_its_maths_and_deviations():
    from backends import torch as backend

    for name in ("ALTO", "ALTOVanilla", "Lamb", "EAdam", "EAdamW", "ESGD", "E"):
        doc = getattr(backend, name).__doc__
        assert ("theta" in doc or "g~_k" in doc) and "Deviation" in doc, name
