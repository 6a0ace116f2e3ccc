"""The project's one 95% interval (``experiments.interval``) and the bands drawn with it."""

import numpy as np
import pytest
from scipy import stats

from ngrpo_sim.experiments.runs import interval, mean_band


@pytest.mark.parametrize("count", [2, 3, 8, 16])
def test_interval_is_scipys_student_t_interval(count):
    values = np.random.default_rng(count).normal(0.4, 0.2, size=count)
    low, high = stats.t.interval(0.95, count - 1, loc=values.mean(), scale=stats.sem(values))
    mean, half = interval(values)
    assert mean == pytest.approx((low + high) / 2, abs=1e-15)
    assert half == pytest.approx((high - low) / 2, rel=1e-12)


def test_interval_leaves_out_undefined_values():
    assert interval([0.2, np.nan, 0.4]) == interval([0.2, 0.4])
    mean, half = interval([0.3, np.nan])
    assert mean == 0.3 and np.isnan(half)
    assert all(np.isnan(interval([np.nan, np.inf])))


def test_mean_band_is_the_interval_of_every_step():
    values = np.random.default_rng(0).uniform(size=(6, 5))
    values[0] = np.nan  # a rollout metric before the first step
    steps, mean, half = mean_band(values)
    assert steps.tolist() == [1, 2, 3, 4, 5]
    for step, m, h in zip(steps, mean, half):
        low, high = stats.t.interval(0.95, 4, loc=values[step].mean(),
                                     scale=stats.sem(values[step]))
        assert (m, h) == (pytest.approx((low + high) / 2), pytest.approx((high - low) / 2))
    assert np.isnan(mean_band(values[:, :1])[2]).all()
