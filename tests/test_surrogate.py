"""The clipped surrogate: finite differences, hand cases and the clip masks."""

import numpy as np
import pytest

from ngrpo_sim import clip_fractions, clipped_surrogate


def loss_at(logp, logp_old, advantages, low, high):
    return clipped_surrogate(np.exp(logp - logp_old), advantages, low, high).loss


@pytest.mark.parametrize("low, high", [(0.2, 0.2), (0.2, 0.28), (0.16, 0.24)])
def test_gradient_matches_central_differences(low, high):
    rng = np.random.default_rng(0)
    logp_old = rng.normal(size=4000)
    logp = logp_old + rng.normal(scale=0.3, size=4000)
    advantages = rng.normal(size=4000)
    ratio = np.exp(logp - logp_old)
    away_from_kinks = (np.abs(ratio - (1 - low)) > 1e-3) & (np.abs(ratio - (1 + high)) > 1e-3)
    h = 1e-6
    numeric = (loss_at(logp + h, logp_old, advantages, low, high)
               - loss_at(logp - h, logp_old, advantages, low, high)) / (2 * h)
    analytic = clipped_surrogate(ratio, advantages, low, high).grad_logp
    np.testing.assert_allclose(analytic[away_from_kinks], numeric[away_from_kinks], rtol=1e-6,
                               atol=1e-8)


def test_asymmetric_bounds_by_hand():
    # ratio 1.26: clipped for NGRPO's 1.24, not for DAPO's 1.28. ratio 0.82: clipped for 0.84, not
    # for 0.80.
    ngrpo = clipped_surrogate(np.array([1.26, 0.82]), np.array([2.0, -1.0]), 0.16, 0.24)
    dapo = clipped_surrogate(np.array([1.26, 0.82]), np.array([2.0, -1.0]), 0.2, 0.28)
    np.testing.assert_array_equal(ngrpo.clipped_high, [True, False])
    np.testing.assert_array_equal(ngrpo.clipped_low, [False, True])
    np.testing.assert_allclose(ngrpo.loss, [-2.0 * 1.24, 1.0 * 0.84])
    np.testing.assert_array_equal(ngrpo.grad_logp, [0.0, 0.0])
    assert not dapo.clipped_high.any() and not dapo.clipped_low.any()
    np.testing.assert_allclose(dapo.grad_logp, [-2.0 * 1.26, 1.0 * 0.82])


def test_bounds_only_bind_in_their_direction_and_there_is_no_dual_clip():
    # Positive advantage with a small ratio and negative advantage with a large ratio keep their
    # gradients.
    result = clipped_surrogate(np.array([0.5, 5.0]), np.array([1.0, -1.0]), 0.16, 0.24)
    assert not result.clipped_low.any() and not result.clipped_high.any()
    np.testing.assert_allclose(result.grad_logp, [-0.5, 5.0])
    np.testing.assert_allclose(result.loss, [-0.5, 5.0])


def test_ratio_one_never_clips():
    advantages = np.linspace(-3, 3, 13)
    result = clipped_surrogate(np.ones(13), advantages, 0.16, 0.24)
    assert not result.clipped_low.any() and not result.clipped_high.any()
    np.testing.assert_array_equal(result.grad_logp, -advantages)


def test_clip_fractions_split_by_sign():
    ratio = np.array([[1.3, 0.7, 1.0, 1.3], [0.7, 1.0, 1.0, 1.0]])
    advantages = np.array([[1.0, -1.0, 1.0, -1.0], [1.0, 1.0, 1.0, 1.0]])
    result = clipped_surrogate(ratio, advantages, 0.2, 0.2)
    assert clip_fractions(result) == (1 / 8, 1 / 8)
    mask = np.array([[1, 1, 1, 1], [0, 0, 0, 0]])
    assert clip_fractions(result, mask) == (1 / 4, 1 / 4)


def test_a_ratio_that_underflowed_to_zero_is_valid():
    # exp(log pi - log pi_old) is 0.0 once the token lost more than e^745 of its probability. The
    # limits at rho -> 0 by hand: A > 0 keeps the unclipped branch -A rho = 0 with gradient 0;
    # A < 0 is clipped at the low bound, loss -A (1 - eps_low), gradient 0; A = 0 gives 0.
    ratio = np.exp(np.array([-800.0, -800.0, -800.0]))
    assert np.all(ratio == 0.0)
    result = clipped_surrogate(ratio, np.array([2.0, -3.0, 0.0]), 0.16, 0.24)
    np.testing.assert_array_equal(result.loss, [0.0, 3.0 * 0.84, 0.0])
    np.testing.assert_array_equal(result.grad_logp, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(result.clipped_low, [False, True, False])
    np.testing.assert_array_equal(result.clipped_high, [False, False, False])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"ratio must be >= 0 \(a ratio of probabilities\), "
                                         r"got -0.5"):
        clipped_surrogate(np.array([1.0, -0.5]), np.array([1.0, 1.0]), 0.2, 0.2)
    with pytest.raises(ValueError, match="ratio must be finite, got a value of inf"):
        clipped_surrogate(np.array([np.inf]), np.array([0.0]), 0.2, 0.2)
    with pytest.raises(ValueError, match="clip_low must be < 1.0, got 1.0"):
        clipped_surrogate(np.array([1.0]), np.array([1.0]), 1.0, 0.2)
    with pytest.raises(ValueError, match="advantages must be finite"):
        clipped_surrogate(np.array([1.0]), np.array([np.nan]), 0.2, 0.2)
