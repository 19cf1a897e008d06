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

from backtest.kernels import _bar, next_signal

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


# ---- the walk's state, one float64 row per genome (integers are exact in a float64), so a
# fold can be walked in pieces (the rules kernel advances every genome one time block at a
# time) with the very same additions in the very same order as in one piece.
S_T = 0  # first bar not yet accounted (the start of the open quiet stretch)
S_CASH = 1
S_FREE = 2
S_POS = 3
S_DEBT = 4
S_LOWER = 5
S_UPPER = 6
S_PREV = 7
S_PEAK = 8
S_MAX_DD = 9
S_S1 = 10
S_S2 = 11
S_S3 = 12
S_S4 = 13
S_DOWN2 = 14
S_EXPOSED = 15
S_NOTIONAL = 16
S_VALUE_SUM = 17
S_TRADES = 18
S_CLOSED = 19
S_WINS = 20
S_GROSS_WIN = 21
S_GROSS_LOSS = 22
S_TRADE_START = 23
S_SEG_VALUE = 24
N_STATE = 25


@njit(cache=True, nogil=True)
def fold_start_nb(st, start, init_cash):
    """A flat book with init_cash at bar ``start``."""
    for i in range(N_STATE):
        st[i] = 0.0
    st[S_T] = start
    st[S_CASH] = init_cash
    st[S_FREE] = init_cash
    st[S_LOWER] = -np.inf
    st[S_UPPER] = np.inf
    st[S_PREV] = init_cash
    st[S_PEAK] = init_cash
    st[S_TRADE_START] = init_cash
    st[S_SEG_VALUE] = init_cash


@njit(cache=True, nogil=True)
def fold_walk_nb(close, prefix, blocks, entry, exit_, entry_words, exit_words, search_from, stop, end, direction, fees,
                 slippage, sl_arg, tp_arg, st, buckets, bucket_bars, bucket_origin, positions):
    """Walk a fold (ending at ``end``) from its state ``st`` up to bar ``stop`` <= end.

    The signals are read on [search_from, stop) only (a caller that reuses its signal
    buffers per time block passes the block's start); the open quiet stretch that began
    before search_from had none. A stretch still quiet at ``stop`` < end stays open in
    ``st`` (flat or fully invested: accounted in one go when it closes, so a fold walked
    in pieces adds exactly what it adds in one piece)."""
    t = int(st[S_T])
    cash = st[S_CASH]
    free = st[S_FREE]
    pos = st[S_POS]
    debt = st[S_DEBT]
    lower = st[S_LOWER]
    upper = st[S_UPPER]
    prev_value = st[S_PREV]
    peak = st[S_PEAK]
    max_dd = st[S_MAX_DD]
    s1 = st[S_S1]
    s2 = st[S_S2]
    s3 = st[S_S3]
    s4 = st[S_S4]
    down2 = st[S_DOWN2]
    exposed = int(st[S_EXPOSED])
    notional_sum = st[S_NOTIONAL]
    value_sum = st[S_VALUE_SUM]
    trades = int(st[S_TRADES])
    closed = int(st[S_CLOSED])
    wins = int(st[S_WINS])
    gross_win = st[S_GROSS_WIN]
    gross_loss = st[S_GROSS_LOSS]
    trade_start = st[S_TRADE_START]
    seg_value = st[S_SEG_VALUE]
    want_buckets = bucket_bars > 0
    want_positions = positions.shape[0] > 0
    while t < stop:
        # ---- the quiet stretch [t, nxt): no order can happen there
        s = max(t, search_from)
        nxt = next_signal(entry, exit_, entry_words, exit_words, s, stop)
        if pos != 0.0 and (lower > -np.inf or upper < np.inf):
            nxt = _first_stop_hit(close, blocks, s, nxt, lower, upper)
        if nxt >= stop and stop < end:
            if pos == 0.0 or (pos > 0.0 and cash == 0.0):
                break  # the stretch stays open: accounted in one go when it closes
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
        t = nxt
        if nxt >= stop:
            break
        # ---- the event bar
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
    st[S_T] = t
    st[S_CASH] = cash
    st[S_FREE] = free
    st[S_POS] = pos
    st[S_DEBT] = debt
    st[S_LOWER] = lower
    st[S_UPPER] = upper
    st[S_PREV] = prev_value
    st[S_PEAK] = peak
    st[S_MAX_DD] = max_dd
    st[S_S1] = s1
    st[S_S2] = s2
    st[S_S3] = s3
    st[S_S4] = s4
    st[S_DOWN2] = down2
    st[S_EXPOSED] = exposed
    st[S_NOTIONAL] = notional_sum
    st[S_VALUE_SUM] = value_sum
    st[S_TRADES] = trades
    st[S_CLOSED] = closed
    st[S_WINS] = wins
    st[S_GROSS_WIN] = gross_win
    st[S_GROSS_LOSS] = gross_loss
    st[S_TRADE_START] = trade_start
    st[S_SEG_VALUE] = seg_value


@njit(cache=True, nogil=True)
def fold_finish_nb(st, acc, start, end, init_cash):
    """The accumulators of a fully walked fold (see simulate_fold_events_nb) into ``acc``."""
    trades = st[S_TRADES]
    if st[S_POS] != 0.0:
        trades += 1.0
    acc[0] = st[S_S1]
    acc[1] = st[S_S2]
    acc[2] = st[S_S3]
    acc[3] = st[S_S4]
    acc[4] = st[S_DOWN2]
    acc[5] = st[S_MAX_DD]
    acc[6] = st[S_VALUE_SUM]
    acc[7] = st[S_EXPOSED]
    acc[8] = st[S_NOTIONAL]
    acc[9] = trades
    acc[10] = st[S_CLOSED]
    acc[11] = st[S_WINS]
    acc[12] = st[S_GROSS_WIN]
    acc[13] = st[S_GROSS_LOSS]
    acc[14] = st[S_PREV] if end > start else init_cash


@njit(cache=True, nogil=True)
def simulate_fold_events_nb(close, prefix, blocks, entry, exit_, entry_words, exit_words, start, end, direction, fees, slippage, init_cash,
                            sl_arg, tp_arg, acc, buckets, bucket_bars, bucket_origin, positions):
    """Simulate one genome on [start, end) from a flat book; accumulators go to ``acc``:
    [s1, s2, s3, s4, down2, max_dd, value_sum, exposed, notional, trades, closed, wins,
     gross_win, gross_loss, final_value] (see fused.write_metrics)."""
    st = np.empty(N_STATE)
    fold_start_nb(st, start, init_cash)
    fold_walk_nb(close, prefix, blocks, entry, exit_, entry_words, exit_words, start, end, end, direction, fees,
                 slippage, sl_arg, tp_arg, st, buckets, bucket_bars, bucket_origin, positions)
    fold_finish_nb(st, acc, start, end, init_cash)
