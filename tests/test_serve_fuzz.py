"""Requests generated from the app's own OpenAPI document (schemathesis): zero 5xx, every 4xx
with a message, responses that match the document. Runs on the shared app (read-only: the
stage routes answer 401 without the token, so nothing generated here changes a stage)."""
from __future__ import annotations

import collections
import json

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from backtest import positions
from backtest.data import synthetic_market
from backtest.strategy import normalize_genome, warmup_bars

# examples per operation and generation mode; POST /v1/predict gets more
EXAMPLES = {"POST /v1/predict": 500}
DEFAULT_EXAMPLES = 60
EXCLUDED_CHECKS = (
    # schema-valid bodies are often refused on purpose: candles out of order, a price of 0,
    # fewer candles than the warm-up (the schema cannot say those)
    "positive_data_acceptance",
)


def test_generated_requests_never_get_a_5xx_and_every_4xx_says_why(serve_app):
    checks = {name: {"enabled": False} for name in EXCLUDED_CHECKS}
    # a body over the size limit is refused with 413 (Content Too Large), which is a rejection too
    checks["negative_data_rejection"] = {"expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]}
    config = schemathesis.Config.from_dict({"checks": checks})
    schema = schemathesis.openapi.from_url(serve_app.url("/openapi.json"), config=config)
    statuses: collections.Counter = collections.Counter()
    problems: list[str] = []
    skipped_negative: list[str] = []

    def runner(operation, mode):
        @settings(max_examples=EXAMPLES.get(operation.label, DEFAULT_EXAMPLES), deadline=None, database=None,
                  derandomize=True, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case):
            response = case.call_and_validate(base_url=serve_app.base, session=serve_app.session)
            statuses[(operation.label, response.status_code)] += 1
            if response.status_code >= 500:
                problems.append(f"{operation.label} {mode}: {response.status_code} {response.text[:200]}")
            elif response.status_code >= 400:
                detail = response.json().get("detail") if response.text else None
                if not isinstance(detail, str) or not detail.strip():
                    problems.append(f"{operation.label} {mode}: {response.status_code} without a message")

        return run

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                runner(operation, mode)()
            except Unsatisfiable:
                # nothing in the operation can be made invalid (GET /healthz takes no input)
                assert mode is GenerationMode.NEGATIVE and operation.label.startswith("GET"), operation.label
                skipped_negative.append(operation.label)

    total = sum(statuses.values())
    print(f"\n{total} generated requests; status codes by operation: {dict(sorted(statuses.items()))}; "
          f"no negative cases for {skipped_negative}")
    assert not problems, problems[:10]
    assert total >= 1000
    assert all(code < 500 for _, code in statuses)
    assert statuses[("POST /v1/predict", 422)] > 0


MUTATIONS = ("none", "swap", "duplicate", "zero price", "nan", "short row", "high below low", "seconds")


@settings(max_examples=150, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(n=st.integers(1, 300), seed=st.integers(0, 2**16), which=st.integers(0, 3), mutation=st.sampled_from(MUTATIONS),
       where=st.floats(0.0, 1.0))
def test_near_valid_candles_get_the_backtest_answer_or_a_4xx(serve_app, n, seed, which, mutation, where):
    """Random markets, whole or with one defect: 200 with backtest.positions, or a 4xx that says why."""
    store = serve_app.store
    rows = synthetic_market(n, seed=seed).to_rows()
    row = min(int(where * n), n - 1)
    rows_list = rows.tolist()
    if mutation == "swap" and n > 1:
        rows_list[row], rows_list[row - 1 if row else 1] = rows_list[row - 1 if row else 1], rows_list[row]
    elif mutation == "duplicate" and n > 1:
        rows_list[row][0] = rows_list[row - 1 if row else 1][0]
    elif mutation == "zero price":
        rows_list[row][4] = 0.0
    elif mutation == "nan":
        rows_list[row][2] = float("nan")
    elif mutation == "short row":
        rows_list[row] = rows_list[row][:5]
    elif mutation == "high below low":
        rows_list[row][2] = rows_list[row][3] / 2
    elif mutation == "seconds":
        rows_list = [[r[0] // 1000, *r[1:]] for r in rows_list]
    valid = mutation == "none" or (mutation in ("swap", "duplicate") and n == 1)
    fields = {} if which == 3 else {"model_version": store.versions[which]}
    body = json.dumps({"candles": rows_list, **fields}).encode()  # NaN written as Python's json writes it
    response = serve_app.session.post(serve_app.url("/v1/predict"), data=body, timeout=60,
                                      headers={"content-type": "application/json"})
    genome = store.genomes[0 if which == 3 else which]
    if valid and n >= warmup_bars(normalize_genome(genome)):
        assert response.status_code == 200, response.text
        assert response.json()["signal"] == int(positions(genome, rows)[-1])
    else:
        assert 400 <= response.status_code < 500, response.text
        assert isinstance(response.json()["detail"], str) and response.json()["detail"]
