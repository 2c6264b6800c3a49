"""Adapters that execute the ``valley_core`` definition on a framework: one module per framework.

Import the one you need (``backends.numpy``, ``backends.torch``, ``backends.keras``, ``backends.cupy``);
importing ``backends`` itself imports no framework.
"""
