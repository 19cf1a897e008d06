"""Tests for backtest.validation: folds, PSR, DSR, PBO (CSCV), minimum backtest length."""

from __future__ import annotations

import math
from math import comb

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.integrate import quad
from scipy.stats import kurtosis as scipy_kurtosis
from scipy.stats import norm
from scipy.stats import skew as scipy_skew

from backtest.validation import (
    EULER_MASCHERONI,
    Fold,
    Split,
    deflated_sharpe_ratio,
    dsr_from_returns,
    expected_max_sharpe,
    minimum_backtest_length,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    psr_from_returns,
    walk_forward_split,
)

# ----------------------------------------------------------------------------- folds


def test_rolling_split_hand_checked():
    split = walk_forward_split(1000, n_folds=4)  # holdout 0.2, train 0.5, rolling
    assert split.holdout_start == 800 and split.holdout_end == 1000
    assert split.folds == (
        Fold(0, 0, 400, 400, 500),
        Fold(1, 100, 500, 500, 600),
        Fold(2, 200, 600, 600, 700),
        Fold(3, 300, 700, 700, 800),
    )
    np.testing.assert_array_equal(split.test_ranges(), [[400, 500], [500, 600], [600, 700], [700, 800]])
    assert split.test_ranges().dtype == np.int64
    np.testing.assert_array_equal(split.holdout_range(), [[800, 1000]])
    assert split.holdout_range().shape == (1, 2) and split.holdout_range().dtype == np.int64


def test_anchored_split_with_warmup_hand_checked():
    split = walk_forward_split(1000, n_folds=4, scheme="anchored", warmup=50)
    # search region [50, 800): 750 bars, first train 375, 375 test bars over 4 folds
    assert [f.train_start for f in split.folds] == [50, 50, 50, 50]
    np.testing.assert_array_equal(split.test_ranges(), [[425, 518], [518, 612], [612, 706], [706, 800]])
    np.testing.assert_array_equal(split.train_ranges()[:, 1], split.test_ranges()[:, 0])


def test_split_is_frozen():
    split = walk_forward_split(500, n_folds=2)
    with pytest.raises(AttributeError):
        split.holdout_start = 0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        split.folds[0].test_end = 0  # type: ignore[misc]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    n_bars=st.integers(1, 20_000),
    n_folds=st.integers(1, 12),
    scheme=st.sampled_from(["rolling", "anchored"]),
    holdout_fraction=st.floats(0.01, 0.6),
    train_fraction=st.floats(0.05, 0.95),
    warmup=st.integers(0, 200),
)
def test_fold_properties(n_bars, n_folds, scheme, holdout_fraction, train_fraction, warmup):
    kwargs = dict(
        n_folds=n_folds, scheme=scheme, holdout_fraction=holdout_fraction,
        train_fraction=train_fraction, warmup=warmup,
    )
    try:
        split = walk_forward_split(n_bars, **kwargs)
    except ValueError as error:
        assert "too few" in str(error)
        # the suggested n_bars is the smallest that works
        suggested = int(str(error).split("n_bars >= ")[1].split()[0])
        assert suggested > n_bars
        walk_forward_split(suggested, **kwargs)
        with pytest.raises(ValueError, match="too few"):
            walk_forward_split(suggested - 1, **kwargs)
        return
    assert isinstance(split, Split) and len(split.folds) == n_folds
    assert split.holdout_end == n_bars
    assert 1 <= split.holdout_end - split.holdout_start
    assert abs((n_bars - split.holdout_start) - n_bars * holdout_fraction) <= 1
    tests = split.test_ranges()
    assert tests.shape == (n_folds, 2)
    # non-empty, ordered, contiguous (hence disjoint), covering up to the holdout
    assert np.all(tests[:, 1] - tests[:, 0] >= 2)
    np.testing.assert_array_equal(tests[1:, 0], tests[:-1, 1])
    assert tests[-1, 1] == split.holdout_start
    sizes = tests[:, 1] - tests[:, 0]
    assert sizes.max() - sizes.min() <= 1
    first_train = split.folds[0].train_end - split.folds[0].train_start
    for k, fold in enumerate(split.folds):
        assert fold.index == k
        assert warmup <= fold.train_start < fold.train_end == fold.test_start < fold.test_end
        assert fold.test_end <= split.holdout_start
        if scheme == "anchored":
            assert fold.train_start == warmup
        else:
            assert fold.train_end - fold.train_start == first_train
    assert split.folds[0].train_start == warmup


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((10,), dict(n_folds=5), "too few"),
        ((1000,), dict(n_folds=4, warmup=990), "too few"),
        ((1000,), dict(n_folds=0), "n_folds"),
        ((1000,), dict(n_folds=2.5), "n_folds"),
        ((1000,), dict(n_folds=True), "n_folds"),
        ((1000.0,), dict(n_folds=2), "n_bars"),
        ((1000,), dict(n_folds=2, holdout_fraction=0.0), "holdout_fraction"),
        ((1000,), dict(n_folds=2, holdout_fraction=1.0), "holdout_fraction"),
        ((1000,), dict(n_folds=2, holdout_fraction=float("nan")), "holdout_fraction"),
        ((1000,), dict(n_folds=2, train_fraction=1.5), "train_fraction"),
        ((1000,), dict(n_folds=2, scheme="expanding"), "rolling"),
        ((1000,), dict(n_folds=2, warmup=-1), "warmup"),
    ],
)
def test_split_rejects_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        walk_forward_split(*args, **kwargs)


# ----------------------------------------------------------------------------- PSR


def test_psr_hand_checked():
    # SR = 0.1 per period, n = 100, normal returns:
    # z = 0.1 * sqrt(99) / sqrt(1 + (3 - 1)/4 * 0.01) = 0.9949874 / 1.0024969 = 0.9925093
    z = 0.1 * math.sqrt(99) / math.sqrt(1.005)
    assert z == pytest.approx(0.9925093, abs=1e-7)
    assert probabilistic_sharpe_ratio(0.1, 100, 0.0, 3.0) == pytest.approx(norm.cdf(z), abs=1e-12)
    assert probabilistic_sharpe_ratio(0.1, 100, 0.0, 3.0) == pytest.approx(0.8395, abs=1e-4)


def test_psr_properties():
    assert probabilistic_sharpe_ratio(0.05, 250, 0.0, 3.0, sharpe_benchmark=0.05) == 0.5
    base = probabilistic_sharpe_ratio(0.1, 250, 0.0, 3.0)
    assert probabilistic_sharpe_ratio(0.1, 1000, 0.0, 3.0) > base  # more evidence
    assert probabilistic_sharpe_ratio(0.1, 250, -1.0, 3.0) < base  # negative skew hurts
    assert probabilistic_sharpe_ratio(0.1, 250, 0.0, 10.0) < base  # fat tails hurt
    assert probabilistic_sharpe_ratio(-0.1, 250, 0.0, 3.0) == pytest.approx(1 - base)


def test_psr_broadcasts():
    out = probabilistic_sharpe_ratio(np.array([0.0, 0.1, 0.2]), 100, 0.0, 3.0)
    assert isinstance(out, np.ndarray) and out.shape == (3,)
    assert out[0] == 0.5 and np.all(np.diff(out) > 0)
    assert isinstance(probabilistic_sharpe_ratio(0.1, 100, 0.0, 3.0), float)


def test_psr_from_returns_matches_moments():
    rng = np.random.default_rng(7)
    r = rng.standard_t(5, size=500) * 0.01 + 0.001
    sr = r.mean() / r.std(ddof=1)
    expected = probabilistic_sharpe_ratio(sr, 500, scipy_skew(r), scipy_kurtosis(r, fisher=False))
    assert psr_from_returns(r) == pytest.approx(expected, rel=1e-12)
    assert psr_from_returns(r, sharpe_benchmark=sr) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(sharpe=0.1, n_obs=1, skew=0.0, kurtosis=3.0), "n_obs"),
        (dict(sharpe=0.1, n_obs=10.5, skew=0.0, kurtosis=3.0), "n_obs"),
        (dict(sharpe=float("nan"), n_obs=100, skew=0.0, kurtosis=3.0), "sharpe"),
        (dict(sharpe=0.1, n_obs=100, skew=0.0, kurtosis=0.0), "excess kurtosis"),
        (dict(sharpe=0.1, n_obs=100, skew=2.0, kurtosis=4.0), "1 \\+ skew"),
        (dict(sharpe=2.0, n_obs=100, skew=1.0, kurtosis=2.0), "annualized"),
        (dict(sharpe=[0.1, 0.2], n_obs=[10, 20, 30], skew=0.0, kurtosis=3.0), "broadcast"),
    ],
)
def test_psr_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        probabilistic_sharpe_ratio(**kwargs)


@pytest.mark.parametrize(
    ("returns", "match"),
    [
        ([0.01], "at least 2"),
        ([0.01, float("nan"), 0.02], "finite"),
        (np.zeros((10, 2)), "1-D"),
        (np.zeros(10), "constant"),
        ("abc", "array of numbers"),
    ],
)
def test_psr_from_returns_rejects_bad_input(returns, match):
    with pytest.raises(ValueError, match=match):
        psr_from_returns(returns)


# ----------------------------------------------------------------------------- DSR


def test_expected_max_sharpe_published_value():
    # E[max] of 10 standard normals by the paper's approximation: 1.575
    assert expected_max_sharpe(10, 1.0) == pytest.approx(1.575, abs=5e-4)
    g = EULER_MASCHERONI
    assert g == pytest.approx(np.euler_gamma)
    by_hand = (1 - g) * norm.ppf(0.9) + g * norm.ppf(1 - 1 / (10 * math.e))
    assert expected_max_sharpe(10) == pytest.approx(by_hand)


@pytest.mark.parametrize("n", [10, 100, 1000])
def test_expected_max_sharpe_close_to_exact_expectation(n):
    exact = quad(lambda x: x * n * norm.pdf(x) * norm.cdf(x) ** (n - 1), -12, 12, limit=200)[0]
    assert expected_max_sharpe(n) == pytest.approx(exact, rel=0.03)


def test_expected_max_sharpe_scales_and_grows():
    assert expected_max_sharpe(1, 5.0) == 0.0
    assert expected_max_sharpe(50, 4.0) == pytest.approx(2 * expected_max_sharpe(50, 1.0))
    values = [expected_max_sharpe(n) for n in (2, 5, 10, 100, 1000)]
    assert np.all(np.diff(values) > 0)


def test_dsr_paper_numerical_example():
    # Bailey & Lopez de Prado (2014), "The Deflated Sharpe Ratio", numerical example:
    # N = 100 trials, V[SR_n] = 1/2 (annualized), annualized SR = 2.5 on T = 1250 daily
    # observations, skewness -3, kurtosis 10 -> SR0 ~= 0.1132 (daily), DSR ~= 0.9004.
    days = 250
    sr0 = expected_max_sharpe(100, 0.5 / days)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    dsr = deflated_sharpe_ratio(2.5 / math.sqrt(days), 1250, -3.0, 10.0, 100, 0.5 / days)
    assert dsr == pytest.approx(0.9004, abs=5e-5)
    assert dsr < 0.95  # the paper's conclusion: not significant at the 95% level


def test_dsr_properties():
    args = (0.1, 1000, -0.5, 5.0)
    assert deflated_sharpe_ratio(*args, 1, 0.01) == probabilistic_sharpe_ratio(*args, sharpe_benchmark=0.0)
    dsr = [deflated_sharpe_ratio(*args, n, 0.001) for n in (1, 2, 10, 100, 1000)]
    assert np.all(np.diff(dsr) < 0)
    more_spread = deflated_sharpe_ratio(*args, 100, 0.004)
    assert more_spread < deflated_sharpe_ratio(*args, 100, 0.001)


def test_dsr_from_returns():
    rng = np.random.default_rng(3)
    r = rng.normal(0.002, 0.01, 750)
    trials = rng.normal(0.0, 0.03, 40)
    sr, g3, g4 = r.mean() / r.std(ddof=1), scipy_skew(r), scipy_kurtosis(r, fisher=False)
    expected = deflated_sharpe_ratio(sr, 750, g3, g4, 40, np.var(trials, ddof=1))
    assert dsr_from_returns(r, trials) == pytest.approx(expected, rel=1e-12)
    assert dsr_from_returns(r, n_trials=40, sharpe_variance=np.var(trials, ddof=1)) == pytest.approx(expected)
    effective = deflated_sharpe_ratio(sr, 750, g3, g4, 8, np.var(trials, ddof=1))
    assert dsr_from_returns(r, trials, n_trials=8) == pytest.approx(effective)
    assert dsr_from_returns(r, n_trials=1) == pytest.approx(psr_from_returns(r))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(), "trial_sharpes"),
        (dict(n_trials=0), "n_trials"),
        (dict(n_trials=5), "sharpe_variance"),
        (dict(trial_sharpes=[0.1, 0.2], sharpe_variance=0.1), "not both"),
        (dict(trial_sharpes=[0.1], n_trials=3), "at least 2"),
        (dict(trial_sharpes=[0.1, float("nan")]), "finite"),
    ],
)
def test_dsr_from_returns_rejects_bad_input(kwargs, match):
    r = np.random.default_rng(0).normal(0.001, 0.01, 100)
    with pytest.raises(ValueError, match=match):
        dsr_from_returns(r, **kwargs)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 1.0), "n_trials"),
        ((10, -1.0), "sharpe_variance"),
        ((10.5, 1.0), "n_trials"),
        ((10, float("inf")), "finite"),
    ],
)
def test_expected_max_sharpe_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        expected_max_sharpe(*args)


# ----------------------------------------------------------------------------- MinBTL


def test_minimum_backtest_length_published_value():
    # Bailey, Borwein, Lopez de Prado & Zhu (2014), "Pseudo-Mathematics and Financial
    # Charlatanism": with 5 years of data, no more than 45 independent model
    # configurations should be tried (target annualized Sharpe ratio 1).
    assert minimum_backtest_length(45) == pytest.approx(5.0, abs=0.01)
    assert minimum_backtest_length(45) < 5.0 < minimum_backtest_length(46)


def test_minimum_backtest_length_properties():
    assert minimum_backtest_length(1) == 0.0
    assert minimum_backtest_length(45, 2.0) == pytest.approx(minimum_backtest_length(45) / 4)
    years = [minimum_backtest_length(n) for n in (2, 10, 100, 1000)]
    assert np.all(np.diff(years) > 0)
    with pytest.raises(ValueError, match="target_sharpe_annualized"):
        minimum_backtest_length(10, 0.0)
    with pytest.raises(ValueError, match="n_trials"):
        minimum_backtest_length(0)


# ----------------------------------------------------------------------------- PBO


def test_pbo_genuine_edge_is_not_overfit():
    rng = np.random.default_rng(11)
    returns = rng.normal(0.0, 0.01, (1600, 20))
    returns[:, 3] += 0.005  # per-period Sharpe 0.5 in every block
    result = probability_of_backtest_overfitting(returns)
    assert result.n_combinations == comb(16, 8)
    assert result.logits.shape == (comb(16, 8),)
    assert result.pbo == 0.0
    assert np.all(result.selected == 3)
    assert result.prob_oos_loss == 0.0
    # the edge is the top out-of-sample rank: w = N / (N + 1)
    np.testing.assert_allclose(result.relative_rank, 20 / 21)


def test_pbo_pure_noise_is_near_half():
    rng = np.random.default_rng(12345)
    pbos = [
        probability_of_backtest_overfitting(rng.normal(0, 0.01, (400, 20)), n_blocks=8).pbo
        for _ in range(30)
    ]
    assert np.mean(pbos) == pytest.approx(0.5, abs=0.1)


def test_pbo_hand_checked_small_case():
    # 4 rows, 2 blocks: combination {block 0} and {block 1}; 2 trials, metric = mean.
    returns = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    result = probability_of_backtest_overfitting(returns, n_blocks=2, metric=lambda x: x.mean(axis=0))
    assert result.n_combinations == 2
    np.testing.assert_array_equal(result.selected, [0, 1])  # IS winner flips with the halves
    np.testing.assert_allclose(result.relative_rank, [1 / 3, 1 / 3])  # and lands last OOS
    np.testing.assert_allclose(result.logits, [math.log(0.5), math.log(0.5)])
    assert result.pbo == 1.0


@pytest.mark.parametrize("n_blocks", [2, 4, 6, 10])
def test_pbo_combination_count_and_metric_parity(n_blocks):
    returns = np.random.default_rng(n_blocks).normal(0, 0.01, (120, 6))
    fast = probability_of_backtest_overfitting(returns, n_blocks=n_blocks)
    slow = probability_of_backtest_overfitting(
        returns, n_blocks=n_blocks, metric=lambda x: x.mean(axis=0) / x.std(axis=0, ddof=1)
    )
    assert fast.n_combinations == comb(n_blocks, n_blocks // 2)
    np.testing.assert_array_equal(fast.selected, slow.selected)
    np.testing.assert_allclose(fast.logits, slow.logits)
    np.testing.assert_allclose(fast.out_of_sample, slow.out_of_sample, rtol=1e-9)
    # symmetric: every partition appears with its complement
    assert 0.0 <= fast.pbo <= 1.0


def test_pbo_constant_trial_does_not_break_sharpe():
    returns = np.random.default_rng(5).normal(0, 0.01, (200, 5))
    returns[:, 0] = 0.0  # a strategy that never trades
    result = probability_of_backtest_overfitting(returns, n_blocks=4)
    assert np.all(np.isfinite(result.logits))


def test_pbo_a_trial_out_of_the_market_in_one_half_is_not_an_infinite_winner():
    """A trial with one lucky bucket is flat (all zeros) in every half without it: its Sharpe
    there is 0, not the +-inf that rounding in the shifted sums would give, so it cannot be
    the in-sample winner over trials with a real edge."""
    rng = np.random.default_rng(11)
    returns = rng.normal(0.002, 0.01, (400, 6))  # five trials with an edge ...
    returns[:, 5] = 0.0
    returns[7, 5] = 0.031                         # ... and one that traded once
    result = probability_of_backtest_overfitting(returns, n_blocks=8)
    assert np.all(np.isfinite(result.in_sample)) and np.all(np.isfinite(result.out_of_sample))
    assert not np.any(result.selected == 5)
    assert result.prob_oos_loss == 0.0


@pytest.mark.parametrize(
    ("matrix", "kwargs", "match"),
    [
        (np.zeros((100, 4)), dict(n_blocks=7), "even"),
        (np.zeros((100, 4)), dict(n_blocks=0), "n_blocks"),
        (np.zeros((10, 4)), dict(n_blocks=16), "exceeds"),
        (np.zeros((100, 1)), dict(), "at least 2 trials"),
        (np.zeros(100), dict(), "2-D"),
        (np.full((100, 3), np.nan), dict(), "finite"),
        (np.zeros((3, 3)), dict(n_blocks=2), "fewer than 2 rows"),
        (np.zeros((100, 3)), dict(metric="sortino"), "metric"),
        (np.zeros((100, 3)), dict(n_blocks=2, metric=lambda x: x.mean()), "scores"),
    ],
)
def test_pbo_rejects_bad_input(matrix, kwargs, match):
    with pytest.raises(ValueError, match=match):
        probability_of_backtest_overfitting(matrix, **kwargs)
