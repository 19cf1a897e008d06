"""The metric catalogue follows Prometheus' naming rules, and everything that names metrics
(the Grafana dashboard, the alert rules, README's table) names exactly the catalogue's."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from backtest.telemetry import CATALOGUE, NullRecorder, PrometheusRecorder, install, recorder
from backtest.telemetry import catalogue as M
from backtest.telemetry.catalogue import exported_names

REPO = Path(__file__).resolve().parents[1]
PREFIXES = ("evolution_", "serving_", "shadow_", "market_data_", "lineage_")
UNBOUNDED = {"strategy_id", "genome", "run_id", "model_version", "error", "message", "parents"}
NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# ------------------------------------------------------------------ PromQL: the metric names an expression reads

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
             "offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, aggregations,
    keywords, label names (in {...} or by/without/on/ignoring (...)) or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, format strings)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group(0)
        rest = text[match.end():].lstrip()
        if word.lower() in _KEYWORDS or rest.startswith("("):
            continue
        if match.start() > 0 and (text[match.start() - 1].isdigit() or text[match.start() - 1] in "$."):
            continue  # 1e-9, $__rate_interval
        names.add(word)
    return names


def test_promql_parser_on_known_expressions():
    assert promql_metric_names('sum by (le, island) (rate(ray_x_bucket{job="ray"}[5m])) / 1e-9') == {"ray_x_bucket"}
    assert promql_metric_names("(time() - a_seconds) > 1800 and a_seconds > 0") == {"a_seconds"}
    assert promql_metric_names("histogram_quantile(0.95, sum(rate(b_bucket[$__rate_interval])) by (le))") == {"b_bucket"}


EXPORTED = {name for spec in CATALOGUE for name in exported_names(spec)}


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((REPO / "configs" / "grafana-dashboard.json").read_text())
    panels = dashboard["panels"] + [p for row in dashboard["panels"] for p in row.get("panels", [])]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def _alert_exprs() -> list[str]:
    rules = yaml.safe_load((REPO / "configs" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


# ------------------------------------------------------------------ the catalogue


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: s.name)
def test_catalogue_names_follow_prometheus_conventions(spec):
    assert NAME.match(spec.name) and spec.name.startswith(PREFIXES)
    assert spec.kind in (M.COUNTER, M.GAUGE, M.HISTOGRAM)
    assert spec.name.endswith("_total") == (spec.kind == M.COUNTER)
    if spec.unit:
        assert spec.unit in ("seconds", "bytes", "ratio")
        assert spec.family.endswith("_" + spec.unit)
    assert not re.search(r"_(ms|milliseconds|minutes|hours|kb|mb|percent)(_|$)", spec.name)
    if "duration" in spec.name or "latency" in spec.name:
        assert spec.kind == M.HISTOGRAM and spec.unit == "seconds"
    if spec.kind == M.HISTOGRAM:
        assert list(spec.buckets) == sorted(set(spec.buckets)) and spec.buckets
    assert not set(spec.labels) & UNBOUNDED
    assert spec.exporter in (M.PROCESS, M.RAY) and spec.help.endswith(".")


def test_catalogue_names_are_unique_and_cover_the_issue():
    assert len({s.name for s in CATALOGUE}) == len(CATALOGUE)
    names = {s.name for s in CATALOGUE}
    for required in ("evolution_generations_total", "evolution_generation_duration_seconds",
                     "evolution_evaluations_per_second", "evolution_trials_evaluated_total",
                     "evolution_trials_cached_total", "evolution_trial_sharpe", "evolution_trial_profit_factor",
                     "evolution_trial_win_rate_ratio", "evolution_gate_outcomes_total", "serving_promotions_total",
                     "serving_rollbacks_total", "serving_stage_changes_total", "shadow_bars_processed_total",
                     "shadow_drift_ratio", "serving_predictions_total", "serving_prediction_latency_seconds",
                     "evolution_errors_total", "serving_errors_total", "market_data_requests_total",
                     "market_data_retries_total", "market_data_circuit_state", "market_data_cache_hits_total",
                     "market_data_cache_misses_total", "market_data_feed_lag_seconds",
                     "lineage_operations_queued_total", "lineage_operations_sent_total",
                     "lineage_operations_spooled_total"):
        assert required in names


# ------------------------------------------------------------------ what names metrics elsewhere


def test_every_dashboard_expression_reads_catalogued_metrics_and_every_metric_is_on_the_dashboard():
    used = set()
    for expr in _dashboard_exprs():
        names = promql_metric_names(expr)
        assert names, expr
        assert names <= EXPORTED, f"{expr}: {names - EXPORTED} are not exported by the project"
        used |= names
    for spec in CATALOGUE:
        assert used & set(exported_names(spec)), f"{spec.exported_name} is on no dashboard panel"


def test_alert_rules_read_catalogued_metrics():
    exprs = _alert_exprs()
    assert len(exprs) >= 5
    for expr in exprs:
        names = promql_metric_names(expr)
        assert names and names <= EXPORTED, f"{expr}: {names - EXPORTED}"
    text = " ".join(exprs)
    for needed in ("serving_rollbacks_total", "evolution_last_generation_timestamp_seconds",
                   "market_data_feed_lag_seconds", "market_data_circuit_state", "evolution_errors_total"):
        assert needed in text


def readme_table() -> str:
    rows = ["| metric (as Prometheus stores it) | type | unit | labels | exported by | help |",
            "| --- | --- | --- | --- | --- | --- |"]
    for spec in CATALOGUE:
        where = "Ray metrics agent" if spec.exporter == M.RAY else "the recording process"
        rows.append(f"| `{spec.exported_name}` | {spec.kind} | {spec.unit or '-'} | "
                    f"{', '.join(spec.labels) or '-'} | {where} | {spec.help} |")
    return "\n".join(rows)


def test_readme_metrics_table_is_the_catalogue():
    readme = (REPO / "README.md").read_text()
    assert readme_table() in readme, "README's metrics table differs from the catalogue; paste:\n" + readme_table()


# ------------------------------------------------------------------ the recorders


def test_prometheus_recorder_exports_catalogue_names_types_and_units():
    from prometheus_client.openmetrics.exposition import generate_latest

    rec = PrometheusRecorder(eager=())
    rec.count(M.GATE_OUTCOMES, 2, gate="dsr", stage="holdout", outcome="fail")
    rec.observe(M.GENERATION_DURATION, 1.5)
    rec.set(M.MARKET_DATA_CIRCUIT_STATE, 2, exchange="binance")
    text = generate_latest(rec.registry).decode()
    assert 'evolution_gate_outcomes_total{gate="dsr",outcome="fail",stage="holdout"} 2.0' in text
    assert "# TYPE evolution_generation_duration_seconds histogram" in text
    assert "# UNIT evolution_generation_duration_seconds seconds" in text
    assert 'evolution_generation_duration_seconds_bucket{le="2.5"} 1.0' in text
    assert 'market_data_circuit_state{exchange="binance"} 2.0' in text
    with pytest.raises(ValueError, match="takes labels"):
        rec.count(M.GATE_OUTCOMES, gate="dsr")


def test_the_default_recorder_records_nothing_and_an_installed_one_everything():
    assert isinstance(recorder(), NullRecorder)
    rec = PrometheusRecorder(eager=())
    install(rec)
    try:
        from backtest.data.cache import InProcessCandleCache

        cache = InProcessCandleCache()
        assert cache.get("binance", "BTC/USDT", "1h") is None
        assert rec.registry.get_sample_value("market_data_cache_misses_total") == 1.0
    finally:
        install(None)
    assert isinstance(recorder(), NullRecorder)
