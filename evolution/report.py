"""The summary table printed at the end of ``evolve run``."""
from __future__ import annotations

from pathlib import Path


def _num(value, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def summary_table(result: dict, run_dir: Path, rows: int = 5) -> str:
    hof = result["hall_of_fame"]
    lines = [
        f"run {result['run_id']}  seed {result['seed']}  {result['n_trials']} distinct trials "
        f"({result.get('n_effective_trials') or '-'} effective)  "
        f"{result['n_errors']} errors  PBO {_num(result['pbo'], '.2f')}",
        "",
        f"{'#':>2}  {'strategy':<16}  {'wf sharpe':>9}  {'ho sharpe':>9}  {'ho mdd':>7}  {'ho trades':>9}  "
        f"{'DSR':>5}  {'gates':<24}  promoted",
    ]
    for i, m in enumerate(hof[:rows]):
        wf, ho = m["metrics"]["walk_forward"], m["metrics"]["holdout"]
        failed = [name for name, ok in m["gates"].items() if not ok]
        gates = "all pass" if not failed else "fail: " + ",".join(failed)
        lines.append(
            f"{i + 1:>2}  {m['strategy_id']:<16}  {_num(wf['sharpe'], '9.2f')}  {_num(ho['sharpe'], '9.2f')}  "
            f"{_num(ho['max_drawdown'], '7.3f')}  {_num(ho['n_trades'], '9.0f')}  {_num(m['dsr'], '5.2f')}  "
            f"{gates:<24}  {'yes' if m['promoted'] else 'no'}"
        )
    if len(hof) > rows:
        lines.append(f"    ... {len(hof) - rows} more in result.json")
    lines += [
        "",
        f"promoted: {len(result['promoted'])} ({', '.join(result['promoted'][:5]) or 'none'})",
        f"run directory: {Path(run_dir).resolve()}  (result.json, trials/, checkpoints/, timing.json)",
    ]
    return "\n".join(lines)
