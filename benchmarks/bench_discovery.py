"""Discovery benchmark (issue 15): can the engine find a real edge, and does it stay quiet
on markets without one?

Markets come from ``backtest/data/planted.py`` (not the demo's generator): hourly bars,
per-bar volatility 0.4%, Gaussian or GARCH-t noise alternating by seed.

* planted: every rule kind of ``planted.RULES`` (trend, mean reversion, time of day, the
  asmbtr state edge; a new kind is one entry there) at planted annualized Sharpe 1, 2, 3 and 5;
* edge-free: random walks (GBM, and GARCH-t: fat tails and volatility clustering) and a
  strong trend edge that stops before the holdout (at 60% of the bars).

Each market is searched at the demo's budget (configs/demo.yaml: islands x population x
generations) by the GA (`evolve run --data`, local islands), and, with exactly as many
evaluations, by random search (the GA's own random genomes) and Optuna's TPE sampler over
the same genome space; all three are judged by the same gates (the trial log of each goes
through ``evolution.runner.build_result``).

Genome families: the demo searches the rules family only (its config names none), which
cannot see the asmbtr state edge. A user who points the engine at a market does not know
which kind of edge it holds, so every market here (planted or edge-free, whatever its kind)
is searched with one family mix, ``--families`` (default rules 0.75, asmbtr 0.25: the
shares of the random initial population; TPE chooses the family as one more parameter):
not a per-market config, which would tell the search the answer and leave the edge-free
markets judged under another search. ``--families rules:1`` is the demo's own space (the
runs before the asmbtr kind existed). Printed:

1. power and false discoveries per market kind: share of markets where something is
   promoted, the promoted strategy's holdout Sharpe as a fraction of the planted rule's
   (median), promotions on edge-free markets, for GA / random search / TPE;
2. the median holdout Sharpe (of the hall of fame's first) per method on planted markets, with
   the paired statistics that say whether the order is more than chance (bootstrap interval of
   the median paired difference, sign test), split by the planted rule's strength, and the
   walk-forward Sharpe both methods select on;
3. ranking: Spearman correlation of each ``gates.rank_by`` score with holdout Sharpe over
   the GA's 100 best distinct trials (by mean walk-forward Sharpe), median over planted
   markets, and the holdout Sharpe of each ranking's first as a fraction of the planted rule's;
4. gate variants (DSR variance, PBO threshold, ranking) re-judged on the same GA runs;
5. the issue's targets, each marked met or not.

Run: nice python benchmarks/bench_discovery.py [--quick] [--seeds N] [--edge-free N]
     [--n-bars N] [--methods ga,random,tpe] [--jobs N] [--set KEY=VALUE]
(results also in benchmarks/results/bench_discovery.json)
"""
from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("EVOLVE_TRACKING", "off")

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARPES = (1.0, 2.0, 3.0, 5.0)
EDGE_FREE = (  # name, spec overrides
    ("random walk (GBM)", {"rule": "trend", "sharpe": 0.0, "noise": "gbm"}),
    ("random walk (GARCH-t)", {"rule": "trend", "sharpe": 0.0, "noise": "garch_t"}),
    ("trend edge stopped at 60%", {"rule": "trend", "sharpe": 5.0, "stop_fraction": 0.6}),
)
TOP_FOR_RANKING = 100
GATE_VARIANTS = {  # configs/demo.yaml's gates with one change each, re-judged on the same GA runs
    "demo gates": {},
    "sharpe_variance: clusters": {"gates.sharpe_variance": "clusters"},
    "max_pbo: null (no PBO gate)": {"gates.max_pbo": None},
    "rank_by: fitness": {"gates.rank_by": "fitness"},
    "min_holdout_dsr: 0.99": {"gates.min_holdout_dsr": 0.99},
}


# ---------------------------------------------------------------------- markets


def market_list(args) -> list[dict]:
    from backtest.data.planted import NOISES, RULES, PlantedSpec

    out = []
    rules = args.rules.split(",") if args.rules else list(RULES)
    for r, rule in enumerate(rules):
        for sharpe in SHARPES:
            for s in range(args.seeds):
                seed = 10_000 + 1000 * r + 100 * int(sharpe) + s
                out.append({"group": f"{rule} SR {sharpe:g}", "kind": "planted", "sharpe": sharpe,
                            "spec": PlantedSpec(rule=rule, sharpe=sharpe, n_bars=args.n_bars,
                                                noise=NOISES[s % 2], seed=seed)})
    # --tpe-markets N: the first N by seed, so a subset holds every rule kind and strength
    strong = sorted((m for m in out if m["sharpe"] >= 3), key=lambda m: m["spec"].seed % 100)
    tpe = set(id(m) for m in (strong if args.tpe_markets is None else strong[:args.tpe_markets]))
    for m in out:
        m["tpe"] = id(m) in tpe
    for i in range(args.edge_free):
        name, over = EDGE_FREE[i % len(EDGE_FREE)]
        out.append({"group": name, "kind": "edge-free", "sharpe": 0.0, "tpe": False,
                    "spec": PlantedSpec(n_bars=args.n_bars, seed=50_000 + i, **over)})
    return out


DEFAULT_FAMILIES = "rules:0.75,asmbtr:0.25"


def parse_families(text: str) -> dict[str, float]:
    """'rules:0.75,asmbtr:0.25' -> {'rules': 0.75, 'asmbtr': 0.25} (validated by the config)."""
    out = {}
    for part in text.split(","):
        name, _, share = part.partition(":")
        try:
            out[name.strip()] = float(share) if share else 1.0
        except ValueError:
            raise SystemExit(f"--families: expected name:share pairs like {DEFAULT_FAMILIES!r}, got {text!r}") from None
    return out


def base_config(seed: int, families: dict[str, float], overrides: dict | None = None):
    from evolution.config import load_config

    return load_config(ROOT / "configs" / "demo.yaml").with_overrides(**{
        **(overrides or {}), "seed": seed, "runtime.backend": "local", "runtime.progress": False, "families": families})


def parse_overrides(items: list[str]) -> dict:
    """['selection.objectives=[sharpe]'] -> {'selection.objectives': ['sharpe']} (values are YAML)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set: expected KEY=VALUE (a dotted key of configs/demo.yaml, a YAML value), got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


# ---------------------------------------------------------------------- baselines


def _rows(genomes: list[dict], generation: int, operator: str, config, spec, evaluator) -> list[dict]:
    """Trial-log rows (evolution/trials.py) for genomes evaluated as an island would."""
    from backtest.strategy import canonical_text_and_id
    from evolution import fitness as fit

    folds = spec.split.test_ranges()
    result = evaluator.evaluate(genomes, spec.market, folds, fees=config.costs.fees, slippage=config.costs.slippage,
                                init_cash=config.costs.init_cash, bucket_bars=config.walk_forward.bucket_bars)
    summaries = fit.summarize_many(result.metrics)
    fold_cols = fit.fold_columns_many(result.metrics)
    rows = []
    for i, genome in enumerate(genomes):
        error = result.errors.get(i)
        summary = summaries[i] if error is None else {n: None for n in fit.SUMMARY_NAMES}
        values = fit.objectives(summary, config.selection.objectives, folds.shape[0], config.selection.min_trades,
                                error is not None)
        buckets = result.buckets[i] - 1.0 if error is None else None
        text, sid = canonical_text_and_id(genome)
        rows.append({"strategy_id": sid, "island": 0, "generation": generation, "parents": [], "operator": operator,
                     "genome": text, "error": error, "evaluated": True, "migrated_from": None,
                     "fitness": [float(v) for v in values], **{f"wf_{k}": v for k, v in summary.items()},
                     **(fold_cols[i] if error is None else fit.fold_columns(None, folds.shape[0])),
                     "oos_returns": buckets if buckets is not None and np.isfinite(buckets).all() else None})
    return rows


def _suggest_indicator(trial, path: str, scale: str | None = None, name: str | None = None) -> dict:
    from backtest.families.rules import INDICATORS

    if name is None:
        pool = [n for n, s in INDICATORS.items() if scale is None or s.scale == scale]
        name = trial.suggest_categorical(f"{path}.name{'.' + scale if scale else ''}", pool)
    out = {"name": name}
    for gene in INDICATORS[name].genes:
        key = f"{path}.{name}.{gene.name}"
        if gene.kind is int:
            out[gene.name] = trial.suggest_int(key, int(gene.low), int(gene.high))
        else:
            out[gene.name] = round(trial.suggest_float(key, gene.low, gene.high), 4)
    return out


def tpe_genome(trial, max_conditions: int) -> dict:
    """A genome built from Optuna suggestions, over the space of ``evolution.families.rules.init_genome``."""
    from backtest.families.base import GENOME_DIRECTIONS as DIRECTIONS
    from backtest.families.base import STOP_LOSS_BOUNDS, TAKE_PROFIT_BOUNDS
    from backtest.families.rules import COMPARISONS as OPERATORS
    from backtest.families.rules import INDICATORS, LOGICS

    genome: dict = {}
    for block in ("entry", "exit"):
        count = trial.suggest_int(f"{block}.count", 1, max_conditions)
        conditions = []
        for c in range(count):
            path = f"{block}.{c}"
            lhs = _suggest_indicator(trial, f"{path}.lhs")
            spec = INDICATORS[lhs["name"]]
            op = trial.suggest_categorical(f"{path}.op", list(OPERATORS))
            if spec.scale == "price":
                rhs = _suggest_indicator(trial, f"{path}.rhs", scale="price")
            elif spec.genes and trial.suggest_categorical(f"{path}.{lhs['name']}.rhs_kind",
                                                          ["threshold", "indicator"]) == "indicator":
                rhs = _suggest_indicator(trial, f"{path}.rhs", name=lhs["name"])
            else:
                low, high = spec.threshold
                rhs = round(trial.suggest_float(f"{path}.{lhs['name']}.threshold", low, high), 4)
            conditions.append({"lhs": lhs, "op": op, "rhs": rhs})
        genome[block] = {"logic": trial.suggest_categorical(f"{block}.logic", list(LOGICS)), "conditions": conditions}
    genome["direction"] = trial.suggest_categorical("direction", list(DIRECTIONS))
    for name, bounds in (("stop_loss", STOP_LOSS_BOUNDS), ("take_profit", TAKE_PROFIT_BOUNDS)):
        genome[name] = round(trial.suggest_float(name, *bounds), 4) if trial.suggest_categorical(f"{name}.on", [False, True]) else None
    return genome


def tpe_asmbtr_genome(trial) -> dict:
    """An asmbtr genome from Optuna suggestions, over the space of ``evolution.families.asmbtr.init_genome``."""
    from backtest.families import asmbtr
    from backtest.families.base import GENOME_DIRECTIONS, STOP_LOSS_BOUNDS, TAKE_PROFIT_BOUNDS
    from evolution.families.asmbtr import MIN_MOVE_SMALLEST

    min_move = 0.0
    if trial.suggest_categorical("asmbtr.min_move.on", [False, True]):
        min_move = round(trial.suggest_float("asmbtr.min_move", MIN_MOVE_SMALLEST, asmbtr.MIN_MOVE_BOUNDS[1], log=True), 6)
    genome = {"family": asmbtr.NAME,
              "depth": trial.suggest_int("asmbtr.depth", *asmbtr.DEPTH_BOUNDS),
              "decay": round(trial.suggest_float("asmbtr.decay", *asmbtr.DECAY_BOUNDS), 4),
              "threshold": round(trial.suggest_float("asmbtr.threshold", *asmbtr.THRESHOLD_BOUNDS), 4),
              "min_move": min_move,
              "direction": trial.suggest_categorical("asmbtr.direction", list(GENOME_DIRECTIONS)),
              "neutral": trial.suggest_categorical("asmbtr.neutral", list(asmbtr.NEUTRALS))}
    for name, bounds in (("stop_loss", STOP_LOSS_BOUNDS), ("take_profit", TAKE_PROFIT_BOUNDS)):
        genome[name] = (round(trial.suggest_float(f"asmbtr.{name}", *bounds), 4)
                        if trial.suggest_categorical(f"asmbtr.{name}.on", [False, True]) else None)
    return genome


def _families_of(config) -> tuple[list[str], np.ndarray]:
    names = [name for name, share in config.families.items() if share > 0]
    shares = np.array([config.families[n] for n in names], dtype=float)
    return names, np.cumsum(shares) / shares.sum()


def run_baseline(method: str, config, spec, budget: int, run_dir: Path) -> dict:
    """Random search or TPE with ``budget`` distinct evaluations, judged like the GA."""
    from backtest import Evaluator
    from backtest.strategy import GenomeError, normalize_genome, normalized_strategy_id
    from evolution import trials
    from evolution.families import init_genome
    from evolution.runner import RunPlan, build_result

    evaluator = Evaluator(memory_bytes=config.evaluator_memory_mb * 2**20)
    families, cdf = _families_of(config)
    batch = config.population * config.islands
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(777,)))
    study = None
    if method == "tpe":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=config.seed))
    known: dict[str, float] = {}
    done, generation, asks = 0, 0, 0
    while done < budget and asks < 3 * budget:
        genomes, asked = [], []
        while len(genomes) < min(batch, budget - done) and asks < 3 * budget:
            asks += 1
            if study is None:  # the family drawn as an island draws it (evolution/island.py)
                family = families[int(cdf.searchsorted(rng.random(), side="right"))] if len(families) > 1 else families[0]
                genome = init_genome(rng, config.operators.max_conditions, family)
            else:
                trial = study.ask()
                family = trial.suggest_categorical("family", families) if len(families) > 1 else families[0]
                try:
                    genome = normalize_genome(tpe_asmbtr_genome(trial) if family == "asmbtr"
                                              else tpe_genome(trial, config.operators.max_conditions))
                except GenomeError:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    continue
            sid = normalized_strategy_id(genome)
            if sid in known or any(sid == normalized_strategy_id(g) for g in genomes):
                if study is not None:  # a repeat costs no evaluation: TPE hears the value it already has
                    study.tell(trial, known.get(sid, 0.0))
                continue
            genomes.append(genome)
            if study is not None:
                asked.append(trial)
        if not genomes:
            break
        rows = _rows(genomes, generation, method, config, spec, evaluator)
        for row in rows:
            known[row["strategy_id"]] = row["fitness"][0] if row["fitness"][0] > -1e8 else -10.0
        for trial, row in zip(asked, rows):
            study.tell(trial, known[row["strategy_id"]])
        trials.write_part(run_dir, generation, rows)
        done += len(genomes)
        generation += 1
    return build_result(RunPlan(config, spec, f"{method}-{config.seed}", run_dir, run_dir / "checkpoints", None))


# ---------------------------------------------------------------------- one market


def judge_market(entry: dict, methods: list[str], families: dict[str, float], overrides: dict | None = None) -> dict:
    from scipy.stats import spearmanr

    from backtest import Evaluator
    from backtest.data.planted import planted_market, rule_sharpe
    from backtest.metrics import periods_per_year
    from evolution.config import RANKINGS
    from evolution.pools import LocalPool
    from evolution.ranking import rank_trials
    from evolution.runner import RunPlan, build_result, execute, plan
    from evolution.trials import read_trials

    spec_p = entry["spec"]
    planted = planted_market(spec_p)
    config = base_config(spec_p.seed % 1000, families, overrides)
    out = {"group": entry["group"], "kind": entry["kind"], "sharpe": entry["sharpe"], "seed": spec_p.seed,
           "noise": spec_p.noise, "expressible": planted.genome is not None}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "market.parquet"
        planted.market.to_frame().to_parquet(data)
        t0 = time.perf_counter()
        run = plan(config, data_path=data, out_dir=Path(tmp) / "ga")
        ga = execute(run, LocalPool(config, run.spec.market, run.spec.split.test_ranges()))
        out["seconds_ga"] = time.perf_counter() - t0
        spec = run.spec
        holdout = (spec.split.holdout_start, spec.split.holdout_end)
        out["planted_holdout_sharpe"] = rule_sharpe(planted, *holdout)
        out["budget"] = ga["n_evaluations"]
        results = {"ga": ga}
        for method in methods:
            if method == "ga" or (method == "tpe" and not entry.get("tpe", True)):
                continue
            t0 = time.perf_counter()
            results[method] = run_baseline(method, config, spec, ga["n_evaluations"], Path(tmp) / method)
            out[f"seconds_{method}"] = time.perf_counter() - t0
        for method in methods:
            if method not in results:
                out[method] = None
                continue
            res = results[method]
            hof = res["hall_of_fame"]
            promoted = [m for m in hof if m["promoted"]]
            out[method] = {
                "promoted": len(promoted),
                "promoted_family": promoted[0]["genome"].get("family", "rules") if promoted else None,
                "promoted_holdout_sharpe": promoted[0]["metrics"]["holdout"]["sharpe"] if promoted else None,
                "top_holdout_sharpe": hof[0]["metrics"]["holdout"]["sharpe"] if hof else None,
                "top_wf_sharpe": hof[0]["metrics"]["walk_forward"].get("sharpe") if hof else None,
                "n_trials": res["n_trials"], "n_effective_trials": res["n_effective_trials"],
                "pbo": res["pbo"], "top_gates": hof[0]["gates"] if hof else None,
            }
        # gate variants, re-judged on the GA's trials: markets with a promotion under each
        out["variants"] = {}
        for name, over in GATE_VARIANTS.items():
            cfg = config.with_overrides(**over)
            res = build_result(RunPlan(cfg, spec, "rejudge", Path(tmp) / "ga", Path(tmp) / "ga" / "checkpoints", None))
            first = next((m for m in res["hall_of_fame"] if m["promoted"]), None)
            out["variants"][name] = {"promoted": len(res["promoted"]),
                                     "promoted_holdout_sharpe": first["metrics"]["holdout"]["sharpe"] if first else None}
        # rankings: the GA's best distinct trials by mean walk-forward Sharpe, scored each way
        buckets_per_year = periods_per_year(3_600_000) / config.walk_forward.bucket_bars
        frame = read_trials(Path(tmp) / "ga")
        by_fitness = rank_trials(frame, config.with_overrides(**{"gates.rank_by": "fitness"}), buckets_per_year)
        top = by_fitness.head(TOP_FOR_RANKING)
        holdout_sharpe = Evaluator().evaluate(list(top["genome"].map(json.loads)), spec.market,
                                              spec.split.holdout_range()).metric("sharpe")[:, 0]
        out["ranking"] = {}
        for name in RANKINGS:
            ranked = rank_trials(top, config.with_overrides(**{"gates.rank_by": name}), buckets_per_year)
            score = dict(zip(ranked["strategy_id"], ranked["rank_score"]))
            values = np.array([score[s] for s in top["strategy_id"]])
            ok = np.isfinite(values) & np.isfinite(holdout_sharpe)
            rho = float(spearmanr(values[ok], holdout_sharpe[ok]).statistic) if ok.sum() > 2 else None
            first = int(np.argmax(np.where(ok, values, -np.inf)))
            out["ranking"][name] = {"spearman": rho, "first_holdout_sharpe": float(holdout_sharpe[first])}
    return out


# ---------------------------------------------------------------------- report


def _median(values) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(values)) if values else None


def _fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _sign_test(wins: int, n: int) -> float:
    """Two-sided binomial sign test: the chance of a split at least this uneven if neither
    method were better (ties dropped)."""
    from scipy.stats import binomtest

    return float(binomtest(wins, n, 0.5).pvalue) if n else 1.0


def _ahead_behind(same: list[dict], method: str) -> tuple[int, int]:
    """Markets where the GA's first has the higher / lower holdout Sharpe (none counts lowest)."""
    def sharpe(r, m):
        value = r[m]["top_holdout_sharpe"]
        return -np.inf if value is None else value

    return (sum(1 for r in same if sharpe(r, "ga") > sharpe(r, method)),
            sum(1 for r in same if sharpe(r, "ga") < sharpe(r, method)))


def _handed(result: dict) -> float:
    """The holdout Sharpe of what a method hands its user: the promoted strategy, or cash (0)
    when nothing passes the gates."""
    return result["promoted_holdout_sharpe"] if result["promoted"] else 0.0


def paired_lines(same: list[dict], method: str, draws: int = 10_000) -> list[str]:
    """How sure the GA-against-``method`` comparison is: the same markets, paired. A median over
    planted markets of mixed strength sits where the weak markets (nothing findable: either
    method's first is a fit to noise) meet the strong ones, so the split by strength and the
    paired statistics say more than the two medians."""
    pairs = [(r["ga"]["top_holdout_sharpe"], r[method]["top_holdout_sharpe"], r["planted_holdout_sharpe"],
              r["ga"].get("top_wf_sharpe"), r[method].get("top_wf_sharpe")) for r in same
             if r["ga"]["top_holdout_sharpe"] is not None and r[method]["top_holdout_sharpe"] is not None]
    if not pairs:
        return []
    ga, other, planted, ga_wf, other_wf = (np.array(c, dtype=float) for c in zip(*pairs))
    diff = ga - other
    rng = np.random.default_rng(0)
    boot = np.median(diff[rng.integers(0, diff.size, size=(draws, diff.size))], axis=1)
    lo, hi = np.percentile(boot, [5, 95])
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    out = [f"paired, GA minus {method}: median {np.median(diff):+.2f} (90% bootstrap interval {lo:+.2f} to {hi:+.2f}), "
           f"mean {diff.mean():+.2f}; GA ahead {wins}, behind {losses}: sign test p = {_sign_test(wins, wins + losses):.2f}"]
    for label, keep in (("planted holdout SR >= 3", planted >= 3), ("planted holdout SR < 3", planted < 3)):
        if keep.any():
            out.append(f"{label:<24} ({int(keep.sum()):>2} markets): GA {np.median(ga[keep]):.2f} vs {method} "
                       f"{np.median(other[keep]):.2f}, GA ahead on {int((diff[keep] > 0).sum())}")
    handed = [(_handed(r["ga"]), _handed(r[method])) for r in same]
    if handed:
        ga_h, other_h = (np.array(c, dtype=float) for c in zip(*handed))
        w, l_ = int((ga_h > other_h).sum()), int((ga_h < other_h).sum())
        out.append(f"what the user is handed (the promoted strategy, or cash: 0 when nothing passes the gates): "
                   f"GA {np.median(ga_h):.2f} vs {method} {np.median(other_h):.2f} (mean {ga_h.mean():.2f} vs "
                   f"{other_h.mean():.2f}); GA ahead {w}, behind {l_}: sign test p = {_sign_test(w, w + l_):.2f}")
    if np.isfinite(ga_wf).all() and np.isfinite(other_wf).all():
        out.append(f"walk-forward Sharpe of the first (what both methods select on): GA {np.median(ga_wf):.2f} vs "
                   f"{method} {np.median(other_wf):.2f}, GA higher on {int((ga_wf > other_wf).sum())} of {ga_wf.size}")
    return out


def report(rows: list[dict], methods: list[str]) -> list[str]:
    lines = []
    head = f"{'market':<28} {'n':>3} {'planted ho SR':>13}"
    for m in methods:
        head += f" | {m + ' promoted':>15} {'ratio':>6} {'top ho SR':>9}"
    lines += ["(1) power and false discoveries (ratio: promoted strategy's holdout Sharpe / planted rule's, median)", head]
    groups = list(dict.fromkeys(r["group"] for r in rows))
    for group in groups:
        sub = [r for r in rows if r["group"] == group]
        planted_sr = _median([r["planted_holdout_sharpe"] for r in sub]) if sub[0]["kind"] == "planted" else None
        line = f"{group:<28} {len(sub):>3} {_fmt(planted_sr, '13.2f')}"
        for m in methods:
            sub_m = [r for r in sub if r[m] is not None]
            if not sub_m:
                line += f" | {'-':>15} {'-':>6} {'-':>9}"
                continue
            hits = sum(1 for r in sub_m if r[m]["promoted"])
            ratio = _median([r[m]["promoted_holdout_sharpe"] / r["planted_holdout_sharpe"]
                             for r in sub_m if r[m]["promoted"] and r["planted_holdout_sharpe"] > 0]) \
                if sub[0]["kind"] == "planted" else None
            top = _median([r[m]["top_holdout_sharpe"] for r in sub_m])
            line += f" | {f'{hits}/{len(sub_m)}':>15} {_fmt(ratio, '6.2f')} {_fmt(top, '9.2f')}"
        lines.append(line)
    planted = [r for r in rows if r["kind"] == "planted"]
    free = [r for r in rows if r["kind"] == "edge-free"]
    lines += ["", "(2) median holdout Sharpe of the hall of fame's first on planted markets, equal evaluations "
              "(each method against the GA on the markets it ran on)"]
    for m in methods:
        if m == "ga":
            continue
        same = [r for r in planted if r[m] is not None]
        lines.append(f"    {m:<7} {_fmt(_median([r[m]['top_holdout_sharpe'] for r in same]))} vs GA "
                     f"{_fmt(_median([r['ga']['top_holdout_sharpe'] for r in same]))} on {len(same)} markets; "
                     f"GA ahead on {_ahead_behind(same, m)[0]}")
        lines += [f"      {line}" for line in paired_lines(same, m)]
    if planted and "ranking" in planted[0]:
        lines += ["", f"(3) ranking: Spearman(score, holdout Sharpe) over the GA's {TOP_FOR_RANKING} best distinct trials "
                  "(median over planted markets); first's holdout Sharpe / planted (median)"]
        for name in planted[0]["ranking"]:
            rho = _median([r["ranking"][name]["spearman"] for r in planted])
            first = _median([r["ranking"][name]["first_holdout_sharpe"] / r["planted_holdout_sharpe"]
                             for r in planted if r["planted_holdout_sharpe"] > 0])
            lines.append(f"    {name:<20} spearman {_fmt(rho, '6.3f')}   first/planted {_fmt(first, '5.2f')}")
    if rows and "variants" in rows[0]:
        lines += ["", "(4) gate variants re-judged on the same GA runs: markets with a promotion; promoted/planted (median)"]
        for name in rows[0]["variants"]:
            ratio = _median([r["variants"][name]["promoted_holdout_sharpe"] / r["planted_holdout_sharpe"]
                             for r in planted if r["variants"][name]["promoted"] and r["planted_holdout_sharpe"] > 0])
            strong_hits = [r for r in planted if r["planted_holdout_sharpe"] >= 3]
            lines.append(f"    {name:<28} planted {sum(1 for r in planted if r['variants'][name]['promoted'])}/{len(planted)} "
                         f"(holdout SR >= 3: {sum(1 for r in strong_hits if r['variants'][name]['promoted'])}/{len(strong_hits)}), "
                         f"edge-free {sum(1 for r in free if r['variants'][name]['promoted'])}/{len(free)}, ratio {_fmt(ratio)}")
    strong = [r for r in planted if r["planted_holdout_sharpe"] >= 3]
    ga_ratio = _median([r["ga"]["promoted_holdout_sharpe"] / r["planted_holdout_sharpe"]
                        for r in planted if r["ga"]["promoted"] and r["planted_holdout_sharpe"] > 0])
    power = sum(1 for r in strong if r["ga"]["promoted"]) / len(strong) if strong else None
    false = sum(1 for r in free if r["ga"]["promoted"])
    lines += ["", "(5) targets (GA at the demo's budget)",
              f"    false promotions on {len(free)} edge-free markets: {false} (target 0) {'MET' if false == 0 else 'NOT MET'}",
              f"    promoted on planted markets whose rule has holdout Sharpe >= 3: "
              f"{_fmt(power, '.0%')} of {len(strong)} (target >= 90%) {'MET' if power is not None and power >= 0.9 else 'NOT MET'}"]
    expressible = [r for r in strong if r.get("expressible", True)]
    if len(expressible) != len(strong):
        p2 = sum(1 for r in expressible if r["ga"]["promoted"]) / len(expressible) if expressible else None
        lines.append(f"      of them, rules a genome of the searched families can trade: {_fmt(p2, '.0%')} of {len(expressible)}")
    lines.append(f"    promoted / planted holdout Sharpe, median: {_fmt(ga_ratio)} (target >= 0.8) "
                 f"{'MET' if ga_ratio is not None and ga_ratio >= 0.8 else 'NOT MET'}")
    for m in methods:
        if m != "ga":
            same = [r for r in planted if r[m] is not None]
            other = _median([r[m]["top_holdout_sharpe"] for r in same])
            ga_same = _median([r["ga"]["top_holdout_sharpe"] for r in same])
            ahead = ga_same is not None and other is not None and ga_same > other
            wins, losses = _ahead_behind(same, m)
            lines.append(f"    GA vs {m} ({len(same)} planted markets): median holdout Sharpe {_fmt(ga_same)} vs "
                         f"{_fmt(other)} {'MET' if ahead else 'NOT MET'} (paired sign test p = "
                         f"{_sign_test(wins, wins + losses):.2f}: below 0.05 the order is more than chance)")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed per planted cell, 6 edge-free markets, 40,000 bars")
    parser.add_argument("--seeds", type=int, help="markets per rule kind and planted Sharpe (default 2)")
    parser.add_argument("--edge-free", type=int, help="edge-free markets (default 20)")
    parser.add_argument("--n-bars", type=int, help="hourly bars per market (default 100,000: a 2.9-year holdout)")
    parser.add_argument("--rules", help="comma-separated rule kinds (default: every kind of backtest/data/planted.py)")
    parser.add_argument("--methods", default="ga,random,tpe", help="ga,random,tpe")
    parser.add_argument("--families", default=DEFAULT_FAMILIES,
                        help=f"genome families searched on every market, name:share (default {DEFAULT_FAMILIES}; "
                             "rules:1 is the demo's space)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a change to configs/demo.yaml for every method's config, e.g. "
                             "'selection.objectives=[sharpe]' (repeatable)")
    parser.add_argument("--only", help="comma-separated parts of market names to keep (e.g. 'stopped,SR 5')")
    parser.add_argument("--jobs", type=int, default=1, help="markets searched in parallel processes")
    parser.add_argument("--tpe-markets", type=int, help="TPE (slow: optuna's TPE costs O(trials) per suggestion) only on "
                        "this many planted markets of Sharpe >= 3, seed by seed across every rule kind and strength "
                        "(default: all of them; never on edge-free ones)")
    args = parser.parse_args()
    args.seeds = args.seeds or (1 if args.quick else 2)
    args.edge_free = args.edge_free if args.edge_free is not None else (6 if args.quick else 20)
    args.n_bars = args.n_bars or (40_000 if args.quick else 100_000)
    methods = args.methods.split(",")
    if "ga" not in methods:
        parser.error("--methods must include ga (the others get its evaluation budget)")
    families = parse_families(args.families)
    overrides = parse_overrides(args.set)
    try:  # a bad --set fails here, not in every market
        base_config(0, families, overrides)
    except (KeyError, TypeError, ValueError) as error:  # ConfigError is a ValueError; a missing section a KeyError
        parser.error(f"--set {overrides}: not a valid change to configs/demo.yaml ({error})")
    markets = [m for m in market_list(args) if not args.only or any(o in m["group"] for o in args.only.split(","))]
    print(f"{len(markets)} markets x {methods}, {args.n_bars:,} hourly bars each, budget of configs/demo.yaml, "
          f"families {families}" + (f", changes to the config {overrides}" if overrides else ""), flush=True)
    started = time.perf_counter()
    rows = []
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            for row in pool.map(judge_market, markets, [methods] * len(markets), [families] * len(markets),
                                [overrides] * len(markets)):
                rows.append(row)
                print(f"  {row['group']:<28} seed {row['seed']}: planted {row['planted_holdout_sharpe']:.2f}, "
                      f"GA promoted {row['ga']['promoted']}", flush=True)
    else:
        for entry in markets:
            row = judge_market(entry, methods, families, overrides)
            rows.append(row)
            print(f"  {row['group']:<28} seed {row['seed']}: planted {row['planted_holdout_sharpe']:.2f}, " + ", ".join(
                f"{m} promoted {row[m]['promoted']} top {_fmt(row[m]['top_holdout_sharpe'])}" for m in methods
                if row[m] is not None), flush=True)
    lines = report(rows, methods)
    lines.append(f"\nwall time {time.perf_counter() - started:.0f} s")
    print("\n".join(lines))
    folder = ROOT / "benchmarks" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench_discovery.json").write_text(json.dumps({"args": vars(args), "rows": rows, "table": lines},
                                                            indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
