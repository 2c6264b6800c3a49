"""The ``valley`` command line: ``valley info``, ``valley demo``, ``valley proofs``, ``valley bench ...``."""
