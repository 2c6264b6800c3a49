"""Writes the checkpoints of ``backends.torch.E`` in the layout of commit d24396a that the load test reads.

Run ONCE against the code of commit d24396a (E before issue 23: its carry in ``E.state``, separate from the base
optimizer's, and saved under a top-level ``"e_adaptor"`` entry), from a checkout of it::

    .venv/bin/python tests/torch/data/make_e_checkpoints_d24396a.py OUT_ROOT

It writes ``OUT_ROOT/tests/torch/data/e_checkpoints_d24396a.pt``: for E over ``AdamW`` and over ``SGD`` with
momentum, the start parameters, 6 steps of gradients (parameter 1 has none at step 2, so the parameters' step
counts differ), ``E.state_dict()`` after 3 steps, a pickle (``torch.save`` bytes) of the parameters and the whole
``E`` after 3 steps, and the parameters after 3 and after 4 steps as that code computed them. The test
(``tests/torch/test_torch_dcp.py``) loads each with today's code, continues and compares. Kept for the record; it
cannot regenerate the file with later code (that would test nothing).
"""

import copy
import io
import sys
from pathlib import Path

import numpy as np
import torch

from backends.torch import E

SHAPES = [(4, 3), (5,)]
STEPS = 6
BASES = {
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.01),
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9),
}
E_ARGS = dict(alpha=-0.5, e_beta=0.5)


def main(out_root: str) -> None:
    rng = np.random.default_rng(7)
    start = [torch.tensor(rng.normal(size=s), dtype=torch.float64) for s in SHAPES]
    grads = [[torch.tensor(rng.normal(size=s), dtype=torch.float64) for s in SHAPES] for _ in range(STEPS)]
    grads[2][1] = None
    out = {}
    for name, make in BASES.items():
        params = [torch.nn.Parameter(p.clone()) for p in start]
        optimizer = E(make(params), **E_ARGS)
        record = {"start": start, "grads": grads, "e_args": E_ARGS}
        for k in range(4):
            for p, g in zip(params, grads[k]):
                p.grad = None if g is None else g.clone()
            optimizer.step()
            if k == 2:
                record["state_dict"] = copy.deepcopy(optimizer.state_dict())  # later steps update in place
                record["params_after_3"] = [p.detach().clone() for p in params]
                buffer = io.BytesIO()
                torch.save({"params": params, "optimizer": optimizer}, buffer)
                record["pickled_after_3"] = buffer.getvalue()
        record["params_after_4"] = [p.detach().clone() for p in params]
        assert set(record["state_dict"]) == {"state", "param_groups", "e_adaptor"}  # the old layout
        out[name] = record
    path = Path(out_root) / "tests" / "torch" / "data" / "e_checkpoints_d24396a.pt"
    torch.save(out, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1])
