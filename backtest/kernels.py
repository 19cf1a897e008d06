"""Numba kernels: order execution, the signal simulation and the fused population kernel.

The order logic mirrors vectorbt's ``Portfolio.from_signals`` with its defaults
(size=inf all-in, no accumulation, price=close, conflicting signals ignored, opposite
entry reverses, stops checked against close and filled at close without slippage,
fixed_fees=0, lock_cash=False) including its float tolerances (rel 1e-9, abs 1e-12),
so results agree to the last few ulps.
"""
from __future__ import annotations

import numpy as np
from numba import njit

LONG = 0  # vectorbt Direction.LongOnly
SHORT = 1  # Direction.ShortOnly
BOTH = 2  # Direction.Both

REL_TOL = 1e-9
ABS_TOL = 1e-12

# metric columns of the fused kernel (names live in metrics.py)
M_TOTAL_RETURN = 0
M_CAGR = 1
M_SHARPE = 2
M_SORTINO = 3
M_MAX_DRAWDOWN = 4
M_CALMAR = 5
M_WIN_RATE = 6
M_PROFIT_FACTOR = 7
M_N_TRADES = 8
M_EXPOSURE = 9
M_TURNOVER = 10
M_FINAL_VALUE = 11
M_N_BARS = 12
M_SKEW = 13
M_KURTOSIS = 14
N_METRICS = 15


@njit(inline="always")
def _is_close(a, b):
    if np.isnan(a) or np.isnan(b):
        return False
    if np.isinf(a) or np.isinf(b):
        return False
    if a == b:
        return True
    return abs(a - b) <= max(REL_TOL * max(abs(a), abs(b)), ABS_TOL)


@njit(inline="always")
def _add(a, b):
    """vectorbt's add_nb: a + b, snapped to 0 when the sum is (nearly) zero."""
    if np.sign(a) != np.sign(b):
        zero = _is_close(abs(a), abs(b))
    else:
        zero = _is_close(a + b, 0.0)
    if zero:
        return 0.0
    return a + b


@njit(inline="always")
def _snap(a):
    if _is_close(a, 0.0):
        return 0.0
    return a


@njit(inline="always")
def _buy(cash, pos, debt, free, size, price, direction, fees, slippage):
    """Buy or cover (vectorbt buy_nb with lock_cash=False, fixed_fees=0, no size limits)."""
    adj_price = price * (1.0 + slippage)
    cash_limit = cash
    if direction == LONG or direction == BOTH:
        if cash_limit == 0.0:
            return cash, pos, debt, free, False, 0.0
    elif pos == 0.0:
        return cash, pos, debt, free, False, 0.0
    if direction == SHORT:
        adj_size = min(-pos, size)
    else:
        adj_size = size
    if adj_size == 0.0:
        return cash, pos, debt, free, False, 0.0
    req_cash = adj_size * adj_price
    total_req = req_cash + req_cash * fees
    if _is_close(total_req, cash_limit) or total_req < cash_limit:
        final_size = adj_size
        final_req = total_req
    else:
        max_req_cash = _snap(cash_limit) / (1.0 + fees)
        if max_req_cash <= 0.0:
            return cash, pos, debt, free, False, 0.0
        final_size = max_req_cash / adj_price
        final_req = cash_limit
    if _is_close(adj_size, 0.0):
        return cash, pos, debt, free, False, 0.0
    new_cash = _add(cash, -final_req)
    new_pos = _add(pos, final_size)
    if pos < 0.0:
        if new_pos < 0.0:
            short_size = final_size
        else:
            short_size = abs(pos)
        debt_diff = short_size * (debt / abs(pos))
        new_debt = _add(debt, -debt_diff)
        new_free = _add(free + 2.0 * debt_diff, -final_req)
    else:
        new_debt = debt
        new_free = _add(free, -final_req)
    return new_cash, new_pos, new_debt, new_free, True, final_size * adj_price


@njit(inline="always")
def _sell(cash, pos, debt, free, size, price, direction, fees, slippage, all_in):
    """Sell or short (vectorbt sell_nb); all_in means size=inf with percent=100%."""
    adj_price = price * (1.0 - slippage)
    if direction == LONG:
        size_limit = min(pos, size)
    elif all_in:
        long_size = max(pos, 0.0)
        long_cash = long_size * adj_price * (1.0 - fees)
        total_free = _add(free, long_cash)
        if total_free <= 0.0:
            if pos <= 0.0:
                return cash, pos, debt, free, False, 0.0
            size_limit = long_size
        else:
            max_short = _snap(total_free) / (adj_price * (1.0 + fees))
            size_limit = _add(long_size, max_short)
            if size_limit <= 0.0:
                return cash, pos, debt, free, False, 0.0
    else:
        size_limit = size
    if direction == LONG and pos == 0.0:
        return cash, pos, debt, free, False, 0.0
    if _is_close(size_limit, 0.0) or size_limit < 0.0:
        return cash, pos, debt, free, False, 0.0
    acq_cash = size_limit * adj_price
    fees_paid = acq_cash * fees
    final_acq = _add(acq_cash, -fees_paid)
    if final_acq < 0.0:
        return cash, pos, debt, free, False, 0.0
    new_cash = cash + final_acq
    new_pos = _add(pos, -size_limit)
    if new_pos < 0.0:
        if pos < 0.0:
            short_size = size_limit
        else:
            short_size = abs(new_pos)
        short_value = short_size * adj_price
        new_debt = debt + short_value
        new_free = _add(free, _add(final_acq, -2.0 * short_value))
    else:
        new_debt = debt
        new_free = free + final_acq
    return new_cash, new_pos, new_debt, new_free, True, acq_cash


@njit(inline="always")
def _bar(cash, pos, debt, free, sl_price, sl_stop, tp_price, tp_stop, entry, exit_, close,
         direction, fees, slippage, sl_arg, tp_arg):
    """One bar of from_signals for one column. Returns the new state and what happened.

    Returns (cash, pos, debt, free, sl_price, sl_stop, tp_price, tp_stop,
             filled, reduced, notional, value_before).
    """
    price = close
    slip = slippage
    long_entry = False
    long_exit = False
    short_entry = False
    short_exit = False
    stop_hit = False
    if pos != 0.0 and (not np.isnan(sl_stop) or not np.isnan(tp_stop)):
        # stops checked against close (open = high = low = close): fill at close, no slippage
        if not np.isnan(sl_stop):
            if pos > 0.0:
                stop_hit = close <= sl_price * (1.0 - sl_stop)
            else:
                stop_hit = sl_price * (1.0 + sl_stop) <= close
        if not stop_hit and not np.isnan(tp_stop):
            if pos > 0.0:
                stop_hit = tp_price * (1.0 + tp_stop) <= close
            else:
                stop_hit = close <= tp_price * (1.0 - tp_stop)
    if stop_hit:
        slip = 0.0
        if pos > 0.0:
            long_exit = True
        else:
            short_exit = True
    elif entry or exit_:
        if direction == LONG:
            long_entry = entry and not exit_
            long_exit = exit_ and not entry
        elif direction == SHORT:
            short_entry = entry and not exit_
            short_exit = exit_ and not entry
        else:
            long_entry = entry and not exit_
            short_entry = exit_ and not entry

    # signals -> order (size, all-in flag, order direction)
    order = 0  # 0 none, 1 buy, -1 sell
    size = 0.0
    all_in = False
    odir = BOTH
    if pos > 0.0:
        if short_entry:
            order = -1
            all_in = True
        elif long_exit:
            order = -1
            size = pos
            odir = LONG
    elif pos < 0.0:
        if long_entry:
            order = 1
            size = np.inf
        elif short_exit:
            order = 1
            size = -pos
            odir = SHORT
    else:
        if long_entry:
            order = 1
            size = np.inf
        elif short_entry:
            order = -1
            all_in = True

    value_before = cash + pos * close
    if order == 0:
        return cash, pos, debt, free, sl_price, sl_stop, tp_price, tp_stop, False, False, 0.0, value_before

    # vectorbt snaps the state before executing an order
    cash = _snap(cash)
    pos = _snap(pos)
    debt = _snap(debt)
    free = _snap(free)
    old_pos = pos
    if order == 1:
        cash, pos, debt, free, filled, notional = _buy(cash, pos, debt, free, size, price, odir, fees, slip)
    else:
        cash, pos, debt, free, filled, notional = _sell(cash, pos, debt, free, size, price, odir, fees, slip, all_in)
    reduced = False
    if filled:
        reduced = old_pos != 0.0 and (np.sign(pos) != np.sign(old_pos) or abs(pos) < abs(old_pos))
        if pos == 0.0:
            sl_price = np.nan
            sl_stop = np.nan
            tp_price = np.nan
            tp_stop = np.nan
        elif old_pos == 0.0 or np.sign(pos) != np.sign(old_pos):
            sl_price = close
            sl_stop = sl_arg
            tp_price = close
            tp_stop = tp_arg
    return cash, pos, debt, free, sl_price, sl_stop, tp_price, tp_stop, filled, reduced, notional, value_before


@njit(cache=True)
def simulate_nb(close, entries, exits, direction, fees, slippage, init_cash, sl_stop, tp_stop,
                write_equity, equity):
    """Simulate N columns of signals, column-major: close (1, T) or (N, T), entries and
    exits (N, T), equity (N, T) written when write_equity.

    Returns total_return (N,), final_value (N,), n_trades (N,).
    """
    n_cols, n_bars = entries.shape
    shared_close = close.shape[0] == 1
    total_return = np.empty(n_cols)
    final_value = np.empty(n_cols)
    n_trades = np.zeros(n_cols, dtype=np.int64)
    for col in range(n_cols):
        ccol = 0 if shared_close else col
        cash = init_cash
        free = init_cash
        pos = 0.0
        debt = 0.0
        sl_price = np.nan
        sl_cur = np.nan
        tp_price = np.nan
        tp_cur = np.nan
        sl_arg = sl_stop[col]
        tp_arg = tp_stop[col]
        trades = 0
        for i in range(n_bars):
            c = close[ccol, i]
            e = entries[col, i]
            x = exits[col, i]
            if e or x or (pos != 0.0 and (sl_cur == sl_cur or tp_cur == tp_cur)):
                cash, pos, debt, free, sl_price, sl_cur, tp_price, tp_cur, filled, reduced, notional, vb = _bar(
                    cash, pos, debt, free, sl_price, sl_cur, tp_price, tp_cur, e, x, c,
                    direction, fees, slippage, sl_arg, tp_arg)
                if reduced:
                    trades += 1
            if write_equity:
                equity[col, i] = cash + pos * c
        if pos != 0.0:
            trades += 1
        last = close[ccol, n_bars - 1]
        final_value[col] = cash + pos * last
        total_return[col] = (final_value[col] - init_cash) / init_cash
        n_trades[col] = trades
    return total_return, final_value, n_trades


@njit(inline="always")
def _condition(value_l, value_r, op, armed, was_below):
    """Evaluate one condition at one bar; crossing state as vectorbt's crossed_above_1d_nb.

    Returns (signal, armed, was_below). For crosses_below the roles of l and r swap.
    """
    if np.isnan(value_l) or np.isnan(value_r):
        return False, True, False
    if op == 0:
        return value_l > value_r, armed, was_below
    if op == 1:
        return value_l < value_r, armed, was_below
    a = value_l
    b = value_r
    if op == 3:
        a = value_r
        b = value_l
    if a > b:
        if was_below:
            signal = armed
            return signal, False, was_below
        return False, armed, was_below
    if a == b:
        return False, True, was_below
    return False, True, True


KIND_TABLE = 0  # a row of the indicator table
KIND_SMA = 1  # simple moving average from the shared running sum (no table row)
KIND_CLOSE = 2  # the close itself


@njit(cache=True)
def running_sum_nb(x):
    """Sequential running sum, the same float additions as vectorbt's rolling mean."""
    out = np.empty(x.shape[0], dtype=np.float64)
    acc = 0.0
    for i in range(x.shape[0]):
        acc = acc + x[i]
        out[i] = acc
    return out


@njit(inline="always")
def _value(u, t, kind, row, param, table, csum, close):
    k = kind[u]
    if k == KIND_TABLE:
        return table[row[u], t]
    if k == KIND_SMA:
        w = param[u]
        if t < w - 1:
            return np.nan
        if t < w:
            return csum[t] / w
        return (csum[t] - csum[t - w]) / w
    return close[t]


@njit(cache=True)
def population_nb(close, kind, row, param, csum, table, lhs, op, rhs, thr, ncond, logic, direction, sl, tp,
                  fold_starts, fold_ends, fees, slippage, init_cash, periods_per_year,
                  metrics, bucket_bars, bucket_origin, buckets, positions):
    """Fused genome -> signals -> simulation -> metrics for a chunk of genomes.

    Indicator u is read as kind[u]: a row row[u] of table (R, T), an SMA of window
    param[u] from the running sum csum (T,), or the close; lhs/op/rhs/thr: (N, 2, K) conditions (entry, exit);
    folds: sorted, non-overlapping [start, end) bar ranges, each simulated from flat with
    init_cash; signals are computed over all bars from 0 so they equal full-history signals.
    metrics: (N, F, N_METRICS) out. buckets: (N, B) growth factors over bucket_bars-sized
    buckets counted from bucket_origin (only when bucket_bars > 0). positions: (T,) int8
    target positions of genome 0 (only when positions.shape[0] > 0).
    """
    n_gen = lhs.shape[0]
    kmax = lhs.shape[2]
    n_folds = fold_starts.shape[0]
    last_bar = fold_ends[n_folds - 1] if n_folds > 0 else 0
    if positions.shape[0] > 0:
        last_bar = max(last_bar, positions.shape[0])
    armed = np.ones((2, kmax), dtype=np.bool_)
    below = np.zeros((2, kmax), dtype=np.bool_)
    want_buckets = bucket_bars > 0
    want_positions = positions.shape[0] > 0
    for g in range(n_gen):
        for b in range(2):
            for k in range(kmax):
                armed[b, k] = True
                below[b, k] = False
        dirn = direction[g]
        sl_arg = sl[g]
        tp_arg = tp[g]
        n_entry = ncond[g, 0]
        n_exit = ncond[g, 1]
        logic_entry = logic[g, 0]
        logic_exit = logic[g, 1]
        fi = 0
        in_fold = False
        # simulation + metric state
        cash = init_cash
        free = init_cash
        pos = 0.0
        debt = 0.0
        sl_price = np.nan
        sl_cur = np.nan
        tp_price = np.nan
        tp_cur = np.nan
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
        trade_start = 0.0
        seg_value = init_cash
        for t in range(last_bar):
            # ---- signals at bar t (always, so crossing state matches the full history)
            entry = False
            if n_entry > 0:
                entry = logic_entry == 0
                for k in range(n_entry):
                    o = op[g, 0, k]
                    vl = _value(lhs[g, 0, k], t, kind, row, param, table, csum, close)
                    r = rhs[g, 0, k]
                    vr = _value(r, t, kind, row, param, table, csum, close) if r >= 0 else thr[g, 0, k]
                    s, armed[0, k], below[0, k] = _condition(vl, vr, o, armed[0, k], below[0, k])
                    if logic_entry == 0:
                        entry = entry and s
                    else:
                        entry = entry or s
            exit_ = False
            if n_exit > 0:
                exit_ = logic_exit == 0
                for k in range(n_exit):
                    o = op[g, 1, k]
                    vl = _value(lhs[g, 1, k], t, kind, row, param, table, csum, close)
                    r = rhs[g, 1, k]
                    vr = _value(r, t, kind, row, param, table, csum, close) if r >= 0 else thr[g, 1, k]
                    s, armed[1, k], below[1, k] = _condition(vl, vr, o, armed[1, k], below[1, k])
                    if logic_exit == 0:
                        exit_ = exit_ and s
                    else:
                        exit_ = exit_ or s
            if want_positions:
                c = close[t]
                if entry or exit_ or (pos != 0.0 and (sl_cur == sl_cur or tp_cur == tp_cur)):
                    cash, pos, debt, free, sl_price, sl_cur, tp_price, tp_cur, filled, reduced, notional, vb = _bar(
                        cash, pos, debt, free, sl_price, sl_cur, tp_price, tp_cur, entry, exit_, c,
                        dirn, fees, slippage, sl_arg, tp_arg)
                positions[t] = 1 if pos > 0.0 else (-1 if pos < 0.0 else 0)
            if fi >= n_folds:
                continue
            if not in_fold:
                if t != fold_starts[fi]:
                    continue
                in_fold = True
                cash = init_cash
                free = init_cash
                pos = 0.0
                debt = 0.0
                sl_price = np.nan
                sl_cur = np.nan
                tp_price = np.nan
                tp_cur = np.nan
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
            # ---- simulate bar t inside the fold
            c = close[t]
            if entry or exit_ or (pos != 0.0 and (sl_cur == sl_cur or tp_cur == tp_cur)):
                old_pos = pos
                cash, pos, debt, free, sl_price, sl_cur, tp_price, tp_cur, filled, reduced, notional, vb = _bar(
                    cash, pos, debt, free, sl_price, sl_cur, tp_price, tp_cur, entry, exit_, c,
                    dirn, fees, slippage, sl_arg, tp_arg)
                if filled:
                    notional_sum += notional
                    if reduced:
                        trades += 1
                        closed += 1
                        if pos == 0.0 or np.sign(pos) == np.sign(old_pos):
                            pnl = cash + pos * c - trade_start  # closed: after exit costs
                        else:
                            pnl = vb - trade_start  # reversed: old trade ends at market value
                        if pnl > 0.0:
                            wins += 1
                            gross_win += pnl
                        else:
                            gross_loss -= pnl
                        if pos != 0.0:
                            trade_start = vb if np.sign(pos) != np.sign(old_pos) else cash + pos * c
                    elif old_pos == 0.0:
                        trade_start = vb
            value = cash + pos * c
            if pos != 0.0:
                exposed += 1
            value_sum += value
            if value != prev_value:
                ret = value / prev_value - 1.0
                r2 = ret * ret
                s1 += ret
                s2 += r2
                s3 += r2 * ret
                s4 += r2 * r2
                if ret < 0.0:
                    down2 += r2
                prev_value = value
                if value > peak:
                    peak = value
                else:
                    dd = 1.0 - value / peak
                    if dd > max_dd:
                        max_dd = dd
            if want_buckets:
                if (t + 1 - bucket_origin) % bucket_bars == 0 or t == fold_ends[fi] - 1:
                    bk = (t - bucket_origin) // bucket_bars
                    if bk >= 0 and bk < buckets.shape[1]:
                        buckets[g, bk] *= value / seg_value
                    seg_value = value
            if t == fold_ends[fi] - 1:
                # ---- close the fold's books
                n = fold_ends[fi] - fold_starts[fi]
                if pos != 0.0:
                    trades += 1
                out = metrics[g, fi]
                final = value
                out[M_FINAL_VALUE] = final
                out[M_TOTAL_RETURN] = final / init_cash - 1.0
                years = n / periods_per_year
                if final > 0.0:
                    out[M_CAGR] = (final / init_cash) ** (1.0 / years) - 1.0
                else:
                    out[M_CAGR] = -1.0
                mean = s1 / n
                var = (s2 - n * mean * mean) / (n - 1) if n > 1 else np.nan
                if var > 0.0:
                    std = np.sqrt(var)
                    out[M_SHARPE] = mean / std * np.sqrt(periods_per_year)
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
                fi += 1
                in_fold = False
    return metrics
