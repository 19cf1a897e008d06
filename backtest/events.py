"""Event-driven fold simulation: work per order, not per bar, where the book allows it.

Between two events (a bar with an entry or exit signal, or a stop hit) no order happens,
so a stretch of bars is accounted in one go:

* flat: the value is the cash, every return is zero;
* fully invested long (all-in buying leaves cash exactly 0): the value is ``pos * close``,
  so the bar returns are the market's and their moments come from prefix sums over the
  market (``MarketSummary``), the drawdown from per-block summaries of the close, and a
  stop hit is found by skipping blocks whose close range stays inside the stop levels;
* anything else (a short book holds cash) is walked bar by bar.

The market summaries are computed once per market and shared by every genome. The
per-bar walk (``fused.simulate_fold_nb``) is the reference: the tests hold both to the
same metrics.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from backtest.kernels import _bar

BLOCK = 64  # bars per close summary block


@njit(cache=True, nogil=True)
def market_summary_nb(close):
    """prefix (6, T + 1): running sums of r, r^2, r^3, r^4, min(r, 0)^2 (r_t = c_t / c_{t-1} - 1,
    r_0 = 0) and of the close; blocks (3, ceil(T / BLOCK)): max, min and the drawdown inside
    each block (1 - close / running max from the block's start)."""
    n = close.shape[0]
    prefix = np.zeros((6, n + 1))
    for j in range(n):
        r = close[j] / close[j - 1] - 1.0 if j > 0 else 0.0
        r2 = r * r
        neg = min(r, 0.0)
        prefix[0, j + 1] = prefix[0, j] + r
        prefix[1, j + 1] = prefix[1, j] + r2
        prefix[2, j + 1] = prefix[2, j] + r2 * r
        prefix[3, j + 1] = prefix[3, j] + r2 * r2
        prefix[4, j + 1] = prefix[4, j] + neg * neg
        prefix[5, j + 1] = prefix[5, j] + close[j]
    n_blocks = (n + BLOCK - 1) // BLOCK
    blocks = np.zeros((3, n_blocks))
    for k in range(n_blocks):
        lo = k * BLOCK
        hi = min(lo + BLOCK, n)
        run_max = close[lo]
        run_min = close[lo]
        dd = 0.0
        for j in range(lo, hi):
            c = close[j]
            if c > run_max:
                run_max = c
            if c < run_min:
                run_min = c
            d = 1.0 - c / run_max
            if d > dd:
                dd = d
        blocks[0, k] = run_max
        blocks[1, k] = run_min
        blocks[2, k] = dd
    return prefix, blocks


@njit(inline="always")
def _next_signal(entry, exit_, entry_words, exit_words, t, end):
    """First bar in [t, end) with an entry or exit signal, else end; skips 8 quiet bars at a
    time through uint64 views of the signal bytes."""
    n_words = entry_words.shape[0]
    while t < end:
        if t & 7 == 0:
            k = t >> 3
            if k < n_words and (entry_words[k] | exit_words[k]) == 0:
                t += 8
                continue
        if entry[t] or exit_[t]:
            return t
        t += 1
    return end


@njit(inline="always")
def _first_stop_hit(close, blocks, t0, t1, lower, upper):
    """First bar in [t0, t1) whose close is <= lower or >= upper, else t1."""
    t = t0
    while t < t1:
        if t % BLOCK == 0 and t + BLOCK <= t1:
            k = t // BLOCK
            if blocks[1, k] > lower and blocks[0, k] < upper:
                t += BLOCK
                continue
        c = close[t]
        if c <= lower or c >= upper:
            return t
        t += 1
    return t1


@njit(inline="always")
def _long_drawdown(close, blocks, t0, t1, pos, peak, max_dd):
    """Running peak and max drawdown of value = pos * close over [t0, t1)."""
    t = t0
    while t < t1:
        if t % BLOCK == 0 and t + BLOCK <= t1:
            k = t // BLOCK
            d = max(blocks[2, k], 1.0 - pos * blocks[1, k] / peak)
            if d > max_dd:
                max_dd = d
            peak = max(peak, pos * blocks[0, k])
            t += BLOCK
            continue
        v = pos * close[t]
        if v > peak:
            peak = v
        else:
            d = 1.0 - v / peak
            if d > max_dd:
                max_dd = d
        t += 1
    return peak, max_dd


@njit(inline="always")
def book_fill(filled, reduced, notional, vb, cash, pos, old_pos, c, notional_sum, trades, closed, wins, gross_win,
              gross_loss, trade_start):
    """Trade bookkeeping after an order: turnover, closed trades' P&L, where the open trade
    started. Returns (notional_sum, trades, closed, wins, gross_win, gross_loss, trade_start)."""
    if filled:
        notional_sum += notional
        if reduced:
            trades += 1
            closed += 1
            if pos == 0.0 or np.sign(pos) == np.sign(old_pos):
                pnl = cash + pos * c - trade_start  # closed: after exit costs
            else:
                pnl = vb - trade_start  # reversed: the old trade ends at market value
            if pnl > 0.0:
                wins += 1
                gross_win += pnl
            else:
                gross_loss -= pnl
            if pos != 0.0:
                trade_start = vb if np.sign(pos) != np.sign(old_pos) else cash + pos * c
        elif old_pos == 0.0:
            trade_start = vb
    return notional_sum, trades, closed, wins, gross_win, gross_loss, trade_start


@njit(inline="always")
def add_return(value, prev_value, s1, s2, s3, s4, down2, peak, max_dd):
    """Account one bar's value: return moments, downside, running peak and max drawdown.
    Returns (prev_value, s1, s2, s3, s4, down2, peak, max_dd)."""
    if value != prev_value:
        ret = value / prev_value - 1.0
        r2 = ret * ret
        s1 += ret
        s2 += r2
        s3 += r2 * ret
        s4 += r2 * r2
        neg = min(ret, 0.0)  # branch-free: the sign of a return is a coin flip
        down2 += neg * neg
        prev_value = value
        if value > peak:
            peak = value
        else:
            d = 1.0 - value / peak
            if d > max_dd:
                max_dd = d
    return prev_value, s1, s2, s3, s4, down2, peak, max_dd


@njit(inline="always")
def add_bucket(buckets, t, value, seg_value, end, bucket_bars, bucket_origin):
    """Close the return bucket that ends at bar t (or at the fold's end); returns seg_value."""
    if (t + 1 - bucket_origin) % bucket_bars == 0 or t == end - 1:
        bk = (t - bucket_origin) // bucket_bars
        if bk >= 0 and bk < buckets.shape[0]:
            buckets[bk] *= value / seg_value
        return value
    return seg_value


@njit(cache=True, nogil=True)
def simulate_fold_events_nb(close, prefix, blocks, entry, exit_, entry_words, exit_words, start, end, direction, fees, slippage, init_cash,
                            sl_arg, tp_arg, acc, buckets, bucket_bars, bucket_origin, positions):
    """Simulate one genome on [start, end) from a flat book; accumulators go to ``acc``:
    [s1, s2, s3, s4, down2, max_dd, value_sum, exposed, notional, trades, closed, wins,
     gross_win, gross_loss, final_value] (see fused.write_metrics)."""
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
    t = start
    while t < end:
        # ---- the quiet stretch [t, nxt): no order can happen there
        nxt = _next_signal(entry, exit_, entry_words, exit_words, t, end)
        if pos != 0.0 and (lower > -np.inf or upper < np.inf):
            nxt = _first_stop_hit(close, blocks, t, nxt, lower, upper)
        if nxt > t:
            if pos == 0.0:
                value_sum += cash * (nxt - t)
                if want_positions:
                    positions[t:nxt] = 0
                if want_buckets:
                    for b in range(t, nxt):  # constant value
                        seg_value = add_bucket(buckets, b, cash, seg_value, end, bucket_bars, bucket_origin)
            elif pos > 0.0 and cash == 0.0:
                s1 += prefix[0, nxt] - prefix[0, t]
                s2 += prefix[1, nxt] - prefix[1, t]
                s3 += prefix[2, nxt] - prefix[2, t]
                s4 += prefix[3, nxt] - prefix[3, t]
                down2 += prefix[4, nxt] - prefix[4, t]
                value_sum += pos * (prefix[5, nxt] - prefix[5, t])
                exposed += nxt - t
                peak, max_dd = _long_drawdown(close, blocks, t, nxt, pos, peak, max_dd)
                prev_value = pos * close[nxt - 1]
                if want_positions:
                    positions[t:nxt] = 1
                if want_buckets:
                    for b in range(t, nxt):
                        seg_value = add_bucket(buckets, b, pos * close[b], seg_value, end, bucket_bars, bucket_origin)
            else:
                for b in range(t, nxt):  # a short (or part-cash) book: bar by bar
                    value = cash + pos * close[b]
                    exposed += 1
                    value_sum += value
                    prev_value, s1, s2, s3, s4, down2, peak, max_dd = add_return(
                        value, prev_value, s1, s2, s3, s4, down2, peak, max_dd)
                    if want_positions:
                        positions[b] = 1 if pos > 0.0 else -1
                    if want_buckets:
                        seg_value = add_bucket(buckets, b, value, seg_value, end, bucket_bars, bucket_origin)
        if nxt >= end:
            break
        # ---- the event bar
        t = nxt
        c = close[t]
        old_pos = pos
        cash, pos, debt, free, lower, upper, filled, reduced, notional, vb = _bar(
            cash, pos, debt, free, lower, upper, entry[t], exit_[t], c, direction, fees, slippage, sl_arg, tp_arg)
        notional_sum, trades, closed, wins, gross_win, gross_loss, trade_start = book_fill(
            filled, reduced, notional, vb, cash, pos, old_pos, c, notional_sum, trades, closed, wins, gross_win,
            gross_loss, trade_start)
        if pos != 0.0:
            exposed += 1
            value = cash + pos * c
        else:
            value = cash
        value_sum += value
        prev_value, s1, s2, s3, s4, down2, peak, max_dd = add_return(
            value, prev_value, s1, s2, s3, s4, down2, peak, max_dd)
        if want_positions:
            positions[t] = 1 if pos > 0.0 else (-1 if pos < 0.0 else 0)
        if want_buckets:
            seg_value = add_bucket(buckets, t, value, seg_value, end, bucket_bars, bucket_origin)
        t += 1
    if pos != 0.0:
        trades += 1
    acc[0] = s1
    acc[1] = s2
    acc[2] = s3
    acc[3] = s4
    acc[4] = down2
    acc[5] = max_dd
    acc[6] = value_sum
    acc[7] = exposed
    acc[8] = notional_sum
    acc[9] = trades
    acc[10] = closed
    acc[11] = wins
    acc[12] = gross_win
    acc[13] = gross_loss
    acc[14] = prev_value if end > start else init_cash
