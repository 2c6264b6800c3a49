"""State built for other shapes is refused (issue 26 item 3).

A state built for tensors of shapes (1,) and (4, 3) used with parameters (3,) and (2, 4, 3) used to broadcast
and change shape without error; the core checks the state's per-tensor buffers against the gradients (which
``chain`` checks against the parameters), shapes only.
"""

from __future__ import annotations

import numpy as np
import pytest

import valley_core as vc

PARAMS = (np.ones(3), np.ones((2, 4, 3)))


@pytest.mark.parametrize("name", sorted(vc.OPTIMIZERS))
def test_state_of_other_shapes_is_refused_naming_tensor_and_shapes(name):
    transform = vc.OPTIMIZERS[name]()
    state = transform.init((np.zeros(1), np.zeros((4, 3))))
    with pytest.raises(ValueError, match=r"state of tensor 0 has shape \(1,\) but parameter 0 has shape \(3,\)"):
        transform.update(PARAMS, state, PARAMS)
    state = transform.init((np.zeros(3), np.zeros((4, 3))))
    with pytest.raises(ValueError, match=r"state of tensor 1 has shape \(4, 3\) but parameter 1 has shape \(2, 4, 3\)"):
        transform.update(PARAMS, state, PARAMS)


def test_state_of_the_right_shapes_is_used():
    transform = vc.alto()
    state = transform.init(PARAMS)
    updates, state = transform.update(PARAMS, state, PARAMS)
    assert [u.shape for u in updates] == [p.shape for p in PARAMS]
    assert [c.shape for c in state[0].carry] == [p.shape for p in PARAMS]


def test_a_dimension_not_known_yet_matches():
    """Symbolic shapes (TensorFlow's ``None``) pass: only known sizes are compared."""
    from valley_core.base import check_state_buffers

    class Symbolic:
        def __init__(self, shape):
            self.shape = shape

    check_state_buffers("t", [Symbolic((None, 3))], [Symbolic((2, 3))])
    with pytest.raises(ValueError, match=r"state of tensor 0 has shape \(2, 4\)"):
        check_state_buffers("t", [Symbolic((None, 3))], [Symbolic((2, 4))])


def test_state_properties_are_declared_on_the_state_types_and_default_for_a_users_own():
    from typing import NamedTuple

    from valley_core.base import field_properties, per_tensor

    assert field_properties("AdamState.second") == (True, None)
    assert field_properties("AdamState.first.3") == (False, None)
    assert "priorities" in (field_properties("CriticalMomentaState.first").float32_only or "")

    class MyState(NamedTuple):  # declares nothing: may be negative, may be stored compactly
        acc: tuple

    assert field_properties(f"{MyState.__name__}.acc") == (False, None)
    with pytest.raises(ValueError, match=r"nonnegative fields \['count'\] are not per tensor"):
        per_tensor("acc", nonnegative=("count",))
