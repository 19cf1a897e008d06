"""The effective number of trials, correlation clusters and the DSR that uses them."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from backtest.validation import (
    EULER_MASCHERONI,
    cluster_returns,
    cluster_sharpe_variance,
    correlation_clusters,
    dsr_from_returns,
    effective_number_of_trials,
    expected_max_normal,
)


def clustered(k: int, members: int, noise: float, t: int = 2000, seed: int = 0) -> np.ndarray:
    """k independent series, each copied ``members`` times with a little noise of its own."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((t, k)) * 0.01
    return np.repeat(base, members, axis=1) + noise * 0.01 * rng.standard_normal((t, k * members))


def test_expected_maximum_of_independent_normals_matches_published_values():
    assert expected_max_normal(1) == pytest.approx(0.0, abs=1e-9)
    assert expected_max_normal(2) == pytest.approx(1 / math.sqrt(math.pi), rel=1e-6)  # 0.56419
    assert expected_max_normal(10) == pytest.approx(1.53875, abs=1e-5)  # Harter (1961)
    assert expected_max_normal(100) == pytest.approx(2.50759, abs=1e-4)


@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_k_groups_of_identical_series_give_k(k):
    result = effective_number_of_trials(clustered(k, 25, 0.0))
    assert result.n_trials == 25 * k and result.n_distinct == k
    assert result.n_effective == pytest.approx(k, rel=0.08)


@pytest.mark.parametrize("k", [2, 5, 20])
def test_k_clusters_of_near_identical_series_give_about_k(k):
    """Copies correlated at 0.99995 with their cluster's series each add a sliver of their own
    noise to the maximum (and 512 draws leave a standard error of about 0.02 on it)."""
    result = effective_number_of_trials(clustered(k, 30, 0.01, seed=k))
    assert k * 0.9 <= result.n_effective <= k * 1.25


def test_independent_series_count_fully():
    rng = np.random.default_rng(5)
    result = effective_number_of_trials(rng.standard_normal((3000, 30)))
    assert result.n_effective == pytest.approx(30, rel=0.15)


def test_two_series_match_the_closed_form_expected_maximum():
    """E[max(X, Y)] = sqrt((1 - rho) / pi) for standard normals of correlation rho: hand-computed
    for rho = 0.5 it is 0.39894, between one trial (0) and two independent ones (0.56419)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(500)
    y = 0.5 * x + math.sqrt(0.75) * rng.standard_normal(500)
    rho = np.corrcoef(x, y)[0, 1]  # the sample correlation is what the trials show
    result = effective_number_of_trials(np.column_stack([x, y]), draws=8000)
    assert result.expected_max == pytest.approx(math.sqrt((1 - rho) / math.pi), abs=3 * result.expected_max_se)
    assert 1.0 < result.n_effective < 2.0
    assert expected_max_normal(result.n_effective) == pytest.approx(result.expected_max, abs=1e-4)


def test_flat_series_carry_no_evidence_and_input_is_checked():
    matrix = clustered(4, 5, 0.0)
    matrix = np.column_stack([matrix, np.zeros((matrix.shape[0], 3))])
    result = effective_number_of_trials(matrix)
    assert (result.n_trials, result.n_valid) == (23, 20)
    assert result.n_effective == pytest.approx(4, rel=0.08)
    assert effective_number_of_trials(np.zeros((10, 3))).n_effective == 1.0
    with pytest.raises(ValueError, match="2-D"):
        effective_number_of_trials(np.zeros(10))
    with pytest.raises(ValueError, match="finite"):
        effective_number_of_trials(np.full((10, 2), np.nan))


def test_the_answer_is_reproducible_and_fast_enough_for_tens_of_thousands_of_trials():
    rng = np.random.default_rng(9)
    matrix = np.repeat(rng.standard_normal((500, 400)), 50, axis=1) + 0.3 * rng.standard_normal((500, 20_000))
    first = effective_number_of_trials(matrix, seed=4)
    assert first == effective_number_of_trials(matrix, seed=4)
    assert first.n_trials == 20_000 and 400 < first.n_effective < 20_000


def test_leader_clusters_follow_the_given_order():
    matrix = clustered(3, 4, 0.05)
    order = np.random.default_rng(1).permutation(matrix.shape[1])
    labels = correlation_clusters(matrix[:, order], threshold=0.9)
    assert labels[0] == 0 and sorted(set(labels.tolist())) == [0, 1, 2]
    truth = order // 4  # the cluster each column came from
    for label in range(3):
        assert len(set(truth[labels == label].tolist())) == 1
    flat = np.column_stack([matrix, np.ones(matrix.shape[0])])
    assert correlation_clusters(flat, 0.9)[-1] == -1


def test_cluster_returns_weight_members_by_inverse_variance():
    a = np.array([0.01, -0.02, 0.03, 0.0])
    matrix = np.column_stack([a, 2 * a, np.array([0.0, 0.01, 0.0, -0.01])])
    labels = np.array([0, 0, 1])
    out = cluster_returns(matrix, labels)
    # variances v and 4v: weights 0.8 and 0.2, so 0.8 a + 0.2 * 2a = 1.2 a
    assert np.allclose(out[:, 0], 1.2 * a)
    assert np.allclose(out[:, 1], matrix[:, 2])
    sr = [a.mean() / a.std(ddof=1), 0.0]
    assert cluster_sharpe_variance(matrix, labels) == pytest.approx(np.var(sr, ddof=1))


def test_dsr_with_the_effective_number_matches_a_hand_computed_case():
    """Three clusters of five identical trials: N_eff = 3 (not 15). Hand computation for a
    selected strategy with per-period Sharpe 0.3 over 100 normal returns (skew 0, kurtosis 3),
    trial Sharpe variance 0.01:
      SR* = sqrt(0.01) * ((1 - g) * Phi^-1(1 - 1/3) + g * Phi^-1(1 - 1/(3e)))
          = 0.1 * (0.42278 * 0.43073 + 0.57722 * 1.16196) = 0.1 * 0.85280 = 0.085280
      DSR = Phi((0.3 - 0.08528) * sqrt(99) / sqrt(1 + (3 - 1)/4 * 0.09)) = Phi(2.08993) = 0.98169
    Counting all 15 trials: SR* = 0.1 * (0.42278 * 1.50109 + 0.57722 * 1.96815) = 0.177068,
    DSR = Phi(1.19653) = 0.88425."""
    n_eff = round(effective_number_of_trials(clustered(3, 5, 0.0)).n_effective)
    assert n_eff == 3
    g = EULER_MASCHERONI
    sr_star = 0.1 * ((1 - g) * norm.ppf(1 - 1 / 3) + g * norm.ppf(1 - 1 / (3 * math.e)))
    assert sr_star == pytest.approx(0.085280, abs=1e-5)
    z = (0.3 - sr_star) * math.sqrt(99) / math.sqrt(1 + 0.5 * 0.09)
    assert z == pytest.approx(2.08993, abs=1e-4)
    # returns with exactly Sharpe 0.3, skew 0 and kurtosis 3 are hard to make; use the moments
    from backtest.validation import deflated_sharpe_ratio

    assert deflated_sharpe_ratio(0.3, 100, 0.0, 3.0, n_eff, 0.01) == pytest.approx(0.98169, abs=1e-4)
    assert deflated_sharpe_ratio(0.3, 100, 0.0, 3.0, 15, 0.01) == pytest.approx(0.88425, abs=1e-4)
    returns = np.random.default_rng(0).standard_normal(400) * 0.01 + 0.003
    assert dsr_from_returns(returns, n_trials=n_eff, sharpe_variance=0.01) > dsr_from_returns(
        returns, n_trials=15, sharpe_variance=0.01)
