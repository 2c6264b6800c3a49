"""The paper's defaults table and the schedules."""

import numpy as np
import pytest

import valley_core as vc


def test_defaults_follow_the_papers_table():
    small, large = vc.defaults_for_batch_size(256), vc.defaults_for_batch_size(4096)
    assert small == {
        "alpha": 0.5,
        "betas": (0.01, 0.9, 0.99),
        "eps": 1e-6,
        "trust_eps": 1e-6,
        "norm_eps": 1e-10,
        "weight_decay": 1e-4,
    }
    assert large["alpha"] == -5.0 and large["betas"] == (0.99, 0.9, 0.99)
    assert vc.defaults_for_batch_size(1023)["alpha"] == 0.5
    assert vc.defaults_for_batch_size(1024)["alpha"] == -5.0
    vc.alto(lr=1e-2, **large)  # both rows satisfy the stability rule
    vc.alto(lr=1e-3, **small)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64"])
def test_defaults_reject_bad_batch_sizes(bad):
    with pytest.raises(ValueError, match=r"violates batch_size is a positive integer"):
        vc.defaults_for_batch_size(bad)


def test_schedules_use_only_operators():
    schedule = vc.inverse_sqrt(0.5)
    assert schedule(4) == 0.25
    np.testing.assert_allclose(schedule(np.asarray(9.0)), 0.5 / 3)
    assert vc.exponential_decay(2.0, 0.5)(3) == 0.25


def test_learning_rate_schedule_sees_the_one_based_step():
    seen = []

    def schedule(k):
        seen.append(float(k))
        return 0.1

    transform = vc.scale_by_learning_rate(schedule)
    params = (np.ones(2),)
    state = transform.init(params)
    for _ in range(3):
        _, state = transform.update(params, state, params)
    assert seen == [1.0, 2.0, 3.0]
