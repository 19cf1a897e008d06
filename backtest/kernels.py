"""Numba kernels: order execution (one bar of from_signals) and simulate()'s signal simulation.

The population kernels that build on ``_bar`` are ``fused.population_nb`` (rules) and
``families/asmbtr.population_nb``; their fold walks are ``events.fold_walk_nb`` (rules, resumable
per time block) and ``fused.simulate_fold_nb`` (asmbtr, bar by bar).

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
def stop_levels(pos, close, sl_arg, tp_arg):
    """Exit levels set when a position opens: exit when close <= lower or close >= upper.

    The same products vectorbt computes (entry close * (1 -/+ stop)), so comparisons agree
    exactly; a missing stop is an infinite level.
    """
    lower = -np.inf
    upper = np.inf
    if pos > 0.0:
        if not np.isnan(sl_arg):
            lower = close * (1.0 - sl_arg)
        if not np.isnan(tp_arg):
            upper = close * (1.0 + tp_arg)
    elif pos < 0.0:
        if not np.isnan(tp_arg):
            lower = close * (1.0 - tp_arg)
        if not np.isnan(sl_arg):
            upper = close * (1.0 + sl_arg)
    return lower, upper


@njit(inline="always")
def _bar(cash, pos, debt, free, lower, upper, entry, exit_, close, direction, fees, slippage, sl_arg, tp_arg):
    """One bar of from_signals for one column. Returns the new state and what happened.

    Stops (levels lower/upper, see stop_levels) are checked against close first; a hit
    exits at close without slippage and ignores that bar's signals, as vectorbt does.
    Returns (cash, pos, debt, free, lower, upper, filled, reduced, notional, value_before).
    """
    price = close
    slip = slippage
    long_entry = False
    long_exit = False
    short_entry = False
    short_exit = False
    stop_hit = pos != 0.0 and (close <= lower or close >= upper)
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
        return cash, pos, debt, free, lower, upper, False, False, 0.0, value_before

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
        if pos == 0.0 or old_pos == 0.0 or np.sign(pos) != np.sign(old_pos):
            lower, upper = stop_levels(pos, close, sl_arg, tp_arg)
    return cash, pos, debt, free, lower, upper, filled, reduced, notional, value_before


_ZERO = np.uint64(0)
_LOW_BIT = np.uint64(1)
_BYTE_INDEX = np.uint64(0x0001020304050607)  # (2^(8j) * this) >> 56 == j
_TOP_BYTE = np.uint64(56)


@njit(inline="always")
def _low_byte(word):
    """Index of the lowest nonzero byte of a nonzero word of 0/1 bytes (little-endian: the
    first array element of the word), by a multiply: (2^(8j) * _BYTE_INDEX) >> 56 == j."""
    low = word & (~word + _LOW_BIT)
    return np.int64((low * _BYTE_INDEX) >> _TOP_BYTE)


@njit(inline="always")
def next_signal(entry, exit_, entry_words, exit_words, t, end):
    """First index in [t, end) with an entry or exit signal, else end.

    entry/exit: bool bytes (0/1); *_words: their uint64 views (the whole words of the
    array). Quiet words are skipped 8 cells per load; in a word with a signal the first
    one is found by a multiply, without byte-by-byte branches."""
    if t >= end:
        return end
    n_words = entry_words.shape[0]
    last = min(n_words, ((end - 1) >> 3) + 1)  # words holding cells before end
    k = t >> 3
    if k < last:
        word = (entry_words[k] | exit_words[k]) >> np.uint64(8 * (t & 7))
        if word != _ZERO:
            t += _low_byte(word)
            return t if t < end else end
        k += 1
        while k < last:
            word = entry_words[k] | exit_words[k]
            if word != _ZERO:
                t = (k << 3) + _low_byte(word)
                return t if t < end else end
            k += 1
        t = k << 3
    while t < end:  # the cells after the last whole word
        if entry[t] or exit_[t]:
            return t
        t += 1
    return end


@njit(inline="always")
def may_order(e, x, pos, direction):
    """False when _bar would place no order on these signals whatever the price (a
    signal the book already follows, or conflicting ones): level signals, which repeat
    every bar, then cost no call."""
    if e == x:
        return False  # conflicting signals are ignored (none at all: nothing to do)
    if direction == LONG:
        return pos == 0.0 if e else pos > 0.0
    if direction == SHORT:
        return pos == 0.0 if e else pos < 0.0
    return pos <= 0.0 if e else pos >= 0.0


@njit(inline="always")
def _cell(cash, pos, debt, free, lower, upper, n_trades, col, e, x, c, direction, fees, slippage, sl_stop, tp_stop):
    """_bar on column col's state arrays; counts a trade when the order reduced a position."""
    (cash[col], pos[col], debt[col], free[col], lower[col], upper[col],
     filled, reduced, notional, vb) = _bar(
        cash[col], pos[col], debt[col], free[col], lower[col], upper[col],
        e, x, c, direction, fees, slippage, sl_stop[col], tp_stop[col])
    if reduced:
        n_trades[col] += 1


@njit(cache=True, nogil=True)
def _cell_nb(cash, pos, debt, free, lower, upper, n_trades, col, e, x, c, direction, fees, slippage, sl_stop, tp_stop):
    """_cell out of line: the one compiled copy of the order logic that every call site of
    simulate_nb shares (a cold start compiles it once, not once per site; the call costs
    a few ns per signal)."""
    _cell(cash, pos, debt, free, lower, upper, n_trades, col, e, x, c, direction, fees, slippage, sl_stop, tp_stop)


@njit(cache=True, nogil=True)
def _stops(close, shared_close, entries_flat, exits_flat, row0, row1, cash, pos, debt, free, lower, upper, n_trades,
           direction, fees, slippage, sl_stop, tp_stop):
    """Stop hits on rows [row0, row1) of the columns without a signal there (a signal's
    own _bar call checks its stops first): one vectorized compare per row."""
    n_cols = lower.shape[0]
    for i in range(row0, row1):
        any_hit = False
        for col in range(n_cols):
            c = close[i, 0] if shared_close else close[i, col]
            any_hit |= (c <= lower[col]) | (c >= upper[col])
        if any_hit:
            row = i * n_cols
            for col in range(n_cols):
                c = close[i, 0] if shared_close else close[i, col]
                e = entries_flat[row + col]
                x = exits_flat[row + col]
                if (c <= lower[col] or c >= upper[col]) and not (e or x):
                    # e and x (both False) rather than literals: the same _cell_nb specialization as the signal walk
                    _cell_nb(cash, pos, debt, free, lower, upper, n_trades, col, e, x, c, direction, fees, slippage,
                             sl_stop, tp_stop)


@njit(cache=True, nogil=True)
def _walk_signals(close, entries, exits, direction, fees, slippage, sl_stop, tp_stop, cash, pos, debt, free, lower, upper,
                  n_trades):
    """simulate_nb without equity: only the cells with a signal or a stop hit cost anything.
    The signal bytes are scanned 8 cells per load in memory order (row by row); when some
    stop is set, each row's stop levels are compared in one vectorized pass (_stops) before
    a later row's signals are acted on. Each column sees its bars in order, with the same
    _bar calls as the bar-by-bar walk."""
    n_bars, n_cols = entries.shape
    shared_close = close.shape[1] == 1
    has_stops = False
    for col in range(n_cols):
        if not (np.isnan(sl_stop[col]) and np.isnan(tp_stop[col])):
            has_stops = True
    n_cells = n_bars * n_cols
    entries_flat = entries.reshape(n_cells)
    exits_flat = exits.reshape(n_cells)
    m8 = n_cells - n_cells % 8
    entry_words = entries_flat[:m8].view(np.uint64)
    exit_words = exits_flat[:m8].view(np.uint64)
    stop_row = np.int64(0)  # rows before it had their stops checked (int64, not a literal 0: one specialization of _stops)
    for w in range((n_cells + 7) >> 3):
        if w < entry_words.shape[0]:
            word = entry_words[w] | exit_words[w]
        else:  # the cells after the last whole word, as a word
            word = _ZERO
            for k in range(m8, n_cells):
                if entries_flat[k] or exits_flat[k]:
                    word |= _LOW_BIT << np.uint64(8 * (k - m8))
        while word != _ZERO:
            k = (w << 3) + _low_byte(word)
            word &= word - _LOW_BIT  # bytes are 0/1: clears the cell just found
            i = k // n_cols
            if has_stops and stop_row < i:
                _stops(close, shared_close, entries_flat, exits_flat, stop_row, i, cash, pos, debt, free, lower,
                       upper, n_trades, direction, fees, slippage, sl_stop, tp_stop)
                stop_row = i
            col = k - i * n_cols
            c = close[i, 0] if shared_close else close[i, col]
            e = entries_flat[k]
            x = exits_flat[k]
            # a signal the book already follows (or conflicting ones) places no order: no call,
            # unless a stop is hit on this bar (_bar checks the stop first)
            if may_order(e, x, pos[col], direction) or c <= lower[col] or c >= upper[col]:
                _cell_nb(cash, pos, debt, free, lower, upper, n_trades, col, e, x, c, direction, fees, slippage,
                         sl_stop, tp_stop)
    if has_stops:
        _stops(close, shared_close, entries_flat, exits_flat, stop_row, n_bars, cash, pos, debt, free, lower, upper,
               n_trades, direction, fees, slippage, sl_stop, tp_stop)


@njit(cache=True, nogil=True)
def simulate_nb(close, entries, exits, direction, fees, slippage, init_cash, sl_stop, tp_stop,
                write_equity, equity):
    """Simulate N columns of signals row by row (C-order inputs, no copies).

    close (T, 1) or (T, N); entries, exits (T, N) bool; equity (T, N) written when
    write_equity. Returns total_return (N,), final_value (N,), n_trades (N,).

    Columns are independent, so without equity only the cells with a signal or a stop hit
    cost anything (_walk_signals).
    """
    n_bars, n_cols = entries.shape
    shared_close = close.shape[1] == 1
    cash = np.full(n_cols, init_cash)
    free = np.full(n_cols, init_cash)
    pos = np.zeros(n_cols)
    debt = np.zeros(n_cols)
    lower = np.full(n_cols, -np.inf)
    upper = np.full(n_cols, np.inf)
    n_trades = np.zeros(n_cols, dtype=np.int64)
    if write_equity:
        for i in range(n_bars):
            for col in range(n_cols):
                c = close[i, 0] if shared_close else close[i, col]
                e = entries[i, col]
                x = exits[i, col]
                if ((e or x) and may_order(e, x, pos[col], direction)) or c <= lower[col] or c >= upper[col]:
                    _cell_nb(cash, pos, debt, free, lower, upper, n_trades, col, e, x, c, direction, fees, slippage,
                             sl_stop, tp_stop)
                p = pos[col]
                equity[i, col] = cash[col] + p * c if p != 0.0 else cash[col]
    else:
        _walk_signals(close, entries, exits, direction, fees, slippage, sl_stop, tp_stop, cash, pos, debt, free, lower,
                      upper, n_trades)
    total_return = np.empty(n_cols)
    final_value = np.empty(n_cols)
    for col in range(n_cols):
        if pos[col] != 0.0:
            n_trades[col] += 1
        last = close[n_bars - 1, 0] if shared_close else close[n_bars - 1, col]
        final_value[col] = cash[col] + pos[col] * last
        total_return[col] = (final_value[col] - init_cash) / init_cash
    return total_return, final_value, n_trades
