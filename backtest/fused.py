"""The rules family's fused population kernel: genome -> signals -> simulation -> metrics.

Per genome, each condition is one tight loop over two indicator rows (or a row and a
threshold) combined into entry and exit buffers of T bytes, reused across genomes; then
one simulation pass per fold accumulates every metric on the fly. No (T, N) array is
ever held for the population.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from backtest.events import add_bucket, add_return, book_fill, simulate_fold_events_nb
from backtest.kernels import (
    LONG,
    M_CAGR,
    M_CALMAR,
    M_EXPOSURE,
    M_FINAL_VALUE,
    M_KURTOSIS,
    M_MAX_DRAWDOWN,
    M_N_BARS,
    M_N_TRADES,
    M_PROFIT_FACTOR,
    M_SHARPE,
    M_SKEW,
    M_SORTINO,
    M_TOTAL_RETURN,
    M_TURNOVER,
    M_WIN_RATE,
    SHORT,
    _bar,
)

OP_GT = 0
OP_LT = 1
OP_CROSS_ABOVE = 2
OP_CROSS_BELOW = 3


@njit(cache=True, nogil=True)
def running_sum_nb(x):
    """Sequential running sum, the same float additions as vectorbt's rolling mean."""
    out = np.empty(x.shape[0], dtype=np.float64)
    acc = 0.0
    for i in range(x.shape[0]):
        acc = acc + x[i]
        out[i] = acc
    return out


@njit(cache=True, nogil=True)
def sma_from_running_sum_nb(csum, window, out):
    """SMA from a shared running sum: bit-identical to vectorbt's rolling_mean_1d_nb."""
    n = csum.shape[0]
    for i in range(min(window - 1, n)):
        out[i] = np.nan
    if window - 1 < n:
        out[window - 1] = csum[window - 1] / window
    if window < n:
        wf = float(window)
        head = csum[window:]
        tail = csum[: n - window]
        dst = out[window:]
        for i in range(n - window):  # written over offset views so LLVM vectorizes it
            dst[i] = (head[i] - tail[i]) / wf


@njit(inline="always")
def _combine(buf, t, s, first, use_and):
    """The first condition writes its signal; later ones AND or OR into it."""
    if first:
        buf[t] = s
    elif use_and:
        buf[t] = buf[t] & s
    else:
        buf[t] = buf[t] | s


@njit(inline="always")
def _cross_step(x, y, armed, was_below):
    """One bar of vectorbt's crossed_above (wait=0), branch-free: NaN resets; x > y fires
    once after a bar with x < y (equal bars re-arm it). Returns (signal, armed, was_below)."""
    gt = x > y
    lt = x < y
    valid = gt | lt | (x == y)
    fire = gt & was_below
    return fire & armed, ~fire, valid & (was_below | lt)


@njit(inline="always")
def _cross_loop(a, b, n, first, use_and, buf):
    """a crosses above b, combined into buf: vectorbt's crossed_above_1d_nb (wait=0).

    Its state machine written branch-free: NaN resets; a > b fires once after a bar with
    a < b (equal bars re-arm it).
    """
    armed = True
    was_below = False
    for t in range(n):
        s, armed, was_below = _cross_step(a[t], b[t], armed, was_below)
        _combine(buf, t, s, first, use_and)


@njit(inline="always")
def _cross_threshold_loop(a, thr, above, n, first, use_and, buf):
    """a crosses above (or below) a constant threshold."""
    armed = True
    was_below = False
    for t in range(n):
        x = a[t]
        s = False
        if np.isnan(x):
            armed = True
            was_below = False
        else:
            hi = x > thr if above else thr > x
            if hi:
                if was_below:
                    s = armed
                    armed = False
            elif x == thr:
                armed = True
            else:
                armed = True
                was_below = True
        _combine(buf, t, s, first, use_and)


@njit(inline="always")
def _compare_loop(a, b, greater, n, first, use_and, buf):
    for t in range(n):
        s = a[t] > b[t] if greater else a[t] < b[t]  # NaN compares False
        _combine(buf, t, s, first, use_and)


@njit(inline="always")
def _compare_threshold_loop(a, thr, greater, n, first, use_and, buf):
    for t in range(n):
        s = a[t] > thr if greater else a[t] < thr
        _combine(buf, t, s, first, use_and)


@njit(cache=True, nogil=True)
def cross_pair_nb(a, b, n, up, down):
    """up: a crosses above b; down: a crosses below b. One pass with shared comparisons
    (the moving-average crossover family: entry and exit on the same two indicators)."""
    armed_u = True
    below_u = False
    armed_d = True
    above_d = False
    for t in range(n):
        x = a[t]
        y = b[t]
        up[t], armed_u, below_u = _cross_step(x, y, armed_u, below_u)
        down[t], armed_d, above_d = _cross_step(y, x, armed_d, above_d)


@njit(inline="always")
def _crossing_pair(lhs, op, rhs, ncond):
    """For one condition per block, both crossings of the same two indicators in opposite
    directions: returns (is_pair, a, b, entry_is_up) with entry = a crosses above b when
    entry_is_up, else exit = a crosses above b (and the other block the crossing below)."""
    if ncond[0] != 1 or ncond[1] != 1 or rhs[0, 0] < 0 or rhs[1, 0] < 0:
        return False, 0, 0, False
    oe = op[0, 0]
    ox = op[1, 0]
    if oe < OP_CROSS_ABOVE or ox < OP_CROSS_ABOVE:
        return False, 0, 0, False
    a = lhs[0, 0]
    b = rhs[0, 0]
    entry_up = oe == OP_CROSS_ABOVE
    if lhs[1, 0] == a and rhs[1, 0] == b:
        exit_up = ox == OP_CROSS_ABOVE
    elif lhs[1, 0] == b and rhs[1, 0] == a:
        exit_up = ox == OP_CROSS_BELOW  # b crosses below a = a crosses above b
    else:
        return False, 0, 0, False
    if entry_up == exit_up:
        return False, 0, 0, False
    return True, a, b, entry_up


@njit(cache=True, nogil=True)
def block_signals_nb(table, lhs, op, rhs, thr, n_cond, use_and, n, buf):
    """Signals of one block (entry or exit) of one genome into buf[:n]."""
    if n_cond == 0:
        for t in range(n):
            buf[t] = False
        return
    for k in range(n_cond):
        first = k == 0
        a = table[lhs[k]]
        o = op[k]
        if rhs[k] >= 0:
            b = table[rhs[k]]
            if o == OP_GT or o == OP_LT:
                _compare_loop(a, b, o == OP_GT, n, first, use_and, buf)
            elif o == OP_CROSS_ABOVE:
                _cross_loop(a, b, n, first, use_and, buf)
            else:
                _cross_loop(b, a, n, first, use_and, buf)
        else:
            if o == OP_GT or o == OP_LT:
                _compare_threshold_loop(a, thr[k], o == OP_GT, n, first, use_and, buf)
            else:
                _cross_threshold_loop(a, thr[k], o == OP_CROSS_ABOVE, n, first, use_and, buf)


@njit(inline="always")
def _may_order(e, x, pos, direction):
    """False when kernels._bar would place no order on these signals whatever the price (a
    signal the book already follows, or conflicting ones): level signals, which repeat
    every bar, then cost no call."""
    if e == x:
        return False  # conflicting signals are ignored (none at all: nothing to do)
    if direction == LONG:
        return pos == 0.0 if e else pos > 0.0
    if direction == SHORT:
        return pos == 0.0 if e else pos < 0.0
    return pos <= 0.0 if e else pos >= 0.0


@njit(cache=True, nogil=True)
def _order_bar(cash, pos, debt, free, lower, upper, e, x, c, direction, fees, slippage, sl_arg, tp_arg,
               notional_sum, trades, closed, wins, gross_win, gross_loss, trade_start):
    """kernels._bar and its bookkeeping (events.book_fill) for one bar, kept out of line: the
    per-bar walk's loop then holds only what every bar touches (measured: 1.4-1.8x faster)."""
    old_pos = pos
    cash, pos, debt, free, lower, upper, filled, reduced, notional, vb = _bar(
        cash, pos, debt, free, lower, upper, e, x, c, direction, fees, slippage, sl_arg, tp_arg)
    notional_sum, trades, closed, wins, gross_win, gross_loss, trade_start = book_fill(
        filled, reduced, notional, vb, cash, pos, old_pos, c, notional_sum, trades, closed, wins,
        gross_win, gross_loss, trade_start)
    return cash, pos, debt, free, lower, upper, notional_sum, trades, closed, wins, gross_win, gross_loss, trade_start


@njit(cache=True, nogil=True)
def simulate_fold_nb(close, entry, exit_, flat, start, end, direction, fees, slippage, init_cash, sl_arg, tp_arg,
                     periods_per_year, out, bucket_bars, bucket_origin, buckets, positions):
    """Simulate one genome on [start, end) from a flat book, bar by bar, and write its metrics to out.

    The reference for events.simulate_fold_events_nb (the tests hold them to the same
    metrics), and the walk of families whose signals change on most bars (asmbtr).
    ``flat`` (bool (T,), or empty for none): a bar where it is set closes an open position
    whatever the direction (as an exit signal of longonly / shortonly would), unless a stop
    or the bar's entry/exit signal acts first."""
    cash = init_cash
    free = init_cash
    pos = 0.0
    debt = 0.0
    lower = -np.inf
    upper = np.inf
    prev_value = init_cash
    peak = init_cash
    max_dd = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    s4 = 0.0
    down2 = 0.0
    exposed = 0
    notional_sum = 0.0
    value_sum = 0.0
    trades = 0
    closed = 0
    wins = 0
    gross_win = 0.0
    gross_loss = 0.0
    trade_start = init_cash
    seg_value = init_cash
    want_buckets = bucket_bars > 0
    want_positions = positions.shape[0] > 0
    has_flat = flat.shape[0] > 0
    value = init_cash
    for t in range(start, end):
        c = close[t]
        e = entry[t]
        x = exit_[t]
        d = direction
        if has_flat and flat[t] and pos != 0.0 and not (e or x):
            x = True
            d = LONG if pos > 0.0 else SHORT
        if ((e or x) and _may_order(e, x, pos, d)) or c <= lower or c >= upper:
            (cash, pos, debt, free, lower, upper, notional_sum, trades, closed, wins, gross_win, gross_loss,
             trade_start) = _order_bar(cash, pos, debt, free, lower, upper, e, x, c, d, fees, slippage, sl_arg,
                                       tp_arg, notional_sum, trades, closed, wins, gross_win, gross_loss, trade_start)
        if want_positions:
            positions[t] = 1 if pos > 0.0 else (-1 if pos < 0.0 else 0)
        if pos != 0.0:
            exposed += 1
            value = cash + pos * c
        else:
            value = cash
        value_sum += value
        prev_value, s1, s2, s3, s4, down2, peak, max_dd = add_return(
            value, prev_value, s1, s2, s3, s4, down2, peak, max_dd)
        if want_buckets:
            seg_value = add_bucket(buckets, t, value, seg_value, end, bucket_bars, bucket_origin)
    if pos != 0.0:
        trades += 1
    acc = np.array([s1, s2, s3, s4, down2, max_dd, value_sum, float(exposed), notional_sum, float(trades),
                    float(closed), float(wins), gross_win, gross_loss, value])
    write_metrics(out, acc, init_cash, end - start, periods_per_year)


@njit(cache=True, nogil=True)
def write_metrics(out, acc, init_cash, n, periods_per_year):
    """Metrics from a fold's accumulators (see events.simulate_fold_events_nb for the order)."""
    s1, s2, s3, s4, down2, max_dd, value_sum = acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6]
    exposed, notional_sum, trades, closed, wins = acc[7], acc[8], acc[9], acc[10], acc[11]
    gross_win, gross_loss, final = acc[12], acc[13], acc[14]
    out[M_FINAL_VALUE] = final
    out[M_TOTAL_RETURN] = final / init_cash - 1.0
    years = n / periods_per_year
    out[M_CAGR] = (final / init_cash) ** (1.0 / years) - 1.0 if final > 0.0 else -1.0
    mean = s1 / n
    var = (s2 - n * mean * mean) / (n - 1) if n > 1 else 0.0
    if var > 0.0:
        out[M_SHARPE] = mean / np.sqrt(var) * np.sqrt(periods_per_year)
        m2 = s2 / n - mean * mean
        m3 = s3 / n - 3.0 * mean * s2 / n + 2.0 * mean ** 3
        m4 = s4 / n - 4.0 * mean * s3 / n + 6.0 * mean * mean * s2 / n - 3.0 * mean ** 4
        out[M_SKEW] = m3 / m2 ** 1.5 if m2 > 0.0 else 0.0
        out[M_KURTOSIS] = m4 / (m2 * m2) if m2 > 0.0 else 3.0
    else:
        out[M_SHARPE] = 0.0
        out[M_SKEW] = 0.0
        out[M_KURTOSIS] = 3.0
    dd2 = down2 / n
    if dd2 > 0.0:
        out[M_SORTINO] = mean / np.sqrt(dd2) * np.sqrt(periods_per_year)
    else:
        out[M_SORTINO] = np.inf if mean > 0.0 else 0.0
    out[M_MAX_DRAWDOWN] = max_dd
    out[M_CALMAR] = out[M_CAGR] / max_dd if max_dd > 0.0 else (np.inf if out[M_CAGR] > 0.0 else 0.0)
    out[M_WIN_RATE] = wins / closed if closed > 0 else np.nan
    if gross_loss > 0.0:
        out[M_PROFIT_FACTOR] = gross_win / gross_loss
    else:
        out[M_PROFIT_FACTOR] = np.inf if gross_win > 0.0 else np.nan
    out[M_N_TRADES] = trades
    out[M_EXPOSURE] = exposed / n
    out[M_TURNOVER] = notional_sum / (value_sum / n) if value_sum > 0.0 else 0.0
    out[M_N_BARS] = n


@njit(cache=True, nogil=True)
def population_nb(close, prefix, blocks, table, lhs, op, rhs, thr, ncond, logic, direction, sl, tp,
                  fold_starts, fold_ends, fees, slippage, init_cash, periods_per_year,
                  metrics, bucket_bars, bucket_origin, buckets, positions):
    """Score a chunk of genomes on every fold.

    table: (U, T) indicator rows; lhs/op/rhs/thr: (N, 2, K) conditions (0 entry, 1 exit),
    rhs -1 means compare with thr. Folds are sorted, non-overlapping [start, end); each
    is simulated from flat with init_cash, with signals computed over all bars from 0 so
    they equal the full-history signals. metrics: (N, F, M) out; buckets: (N, B) growth
    factors per bucket_bars bars from bucket_origin (when bucket_bars > 0).
    With positions.shape[0] == T and no folds, genome 0 is simulated over all bars and
    its target positions are written there.
    """
    n_gen = lhs.shape[0]
    n_folds = fold_starts.shape[0]
    want_positions = positions.shape[0] > 0
    n = fold_ends[n_folds - 1] if n_folds > 0 else positions.shape[0]
    entry = np.empty(n, dtype=np.bool_)
    exit_ = np.empty(n, dtype=np.bool_)
    no_positions = np.empty(0, dtype=np.int8)
    acc = np.empty(15, dtype=np.float64)
    entry_words = entry[: n - n % 8].view(np.uint64)  # quiet stretches are skipped 8 bars at a time
    exit_words = exit_[: n - n % 8].view(np.uint64)
    empty_buckets = np.empty(0, dtype=np.float64)
    for g in range(n_gen):
        is_pair, a, b, entry_up = _crossing_pair(lhs[g], op[g], rhs[g], ncond[g])
        if is_pair:
            if entry_up:
                cross_pair_nb(table[a], table[b], n, entry, exit_)
            else:
                cross_pair_nb(table[a], table[b], n, exit_, entry)
        else:
            block_signals_nb(table, lhs[g, 0], op[g, 0], rhs[g, 0], thr[g, 0], ncond[g, 0], logic[g, 0] == 0, n, entry)
            block_signals_nb(table, lhs[g, 1], op[g, 1], rhs[g, 1], thr[g, 1], ncond[g, 1], logic[g, 1] == 0, n, exit_)
        if want_positions:
            simulate_fold_events_nb(close, prefix, blocks, entry, exit_, entry_words, exit_words, 0, n, direction[g], fees, slippage,
                                    init_cash, sl[g], tp[g], acc, empty_buckets, 0, 0, positions)
            continue
        for f in range(n_folds):
            bk = buckets[g] if bucket_bars > 0 else empty_buckets
            simulate_fold_events_nb(close, prefix, blocks, entry, exit_, entry_words, exit_words, fold_starts[f], fold_ends[f], direction[g],
                                    fees, slippage, init_cash, sl[g], tp[g], acc, bk, bucket_bars, bucket_origin,
                                    no_positions)
            write_metrics(metrics[g, f], acc, init_cash, fold_ends[f] - fold_starts[f], periods_per_year)
    return metrics
