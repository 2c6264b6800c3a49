"""proofs_check: numerical verification of the paper's convergence and behaviour claims.

One module per claim (``stability``, ``convex_regret``, ``nonconvex``, ``hessian_link``, ``flatness``,
``valley_travel``), each with ``run(ctx) -> ClaimResult``; ``runners`` steps the optimizers through the
chosen backend; ``report`` writes ``report.md`` / ``report.json``; ``cli`` is ``python -m proofs_check`` and
``valley proofs``. See ``docs/proofs.md`` for the latest full run.
"""

from proofs_check.cli import CLAIMS, main

__all__ = ["CLAIMS", "main"]
