"""``python -m proofs_check``: see ``proofs_check.cli``."""

from proofs_check.cli import main

raise SystemExit(main())
