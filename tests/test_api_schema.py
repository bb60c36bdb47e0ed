"""Schema-driven fuzzing (schemathesis): every operation in the app's OpenAPI schema is called with generated
requests against a real uvicorn on 127.0.0.1. 0 x 5xx, responses that match their declared models, no hangs
(each call has a timeout). Bounded: MAX_EXAMPLES per operation; `--hypothesis-show-statistics` prints counts."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error, response_schema_conformance  # noqa: E402

import media_fixtures as media  # noqa: E402
from memeindex.server import create_app  # noqa: E402
from memeindex.settings import Settings  # noqa: E402

MAX_EXAMPLES = 30
CALL_TIMEOUT = 30  # seconds: a request that takes longer is a hang


@pytest.fixture(scope="module")
def live(media_index):
    _, index_dir = media_index
    with media.LiveServer(create_app(index_dir, Settings.from_env())) as server:
        yield server


def test_every_operation_never_5xx_and_matches_its_schema(live):
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = sorted(op.label for op in operations)
    assert "POST /api/search" in labels and "GET /health" in labels and "GET /api/memes/{meme_id}/thumb" in labels
    calls: dict[str, int] = {}
    statuses: dict[str, set] = {}
    runs = [(op, mode) for op in operations for mode in schemathesis.GenerationMode]
    for operation, mode in runs:  # valid requests, then requests that break the schema on purpose
        try:
            strategy = operation.as_strategy(generation_mode=mode)
        except Exception:  # noqa: BLE001 - no way to break an operation without parameters
            continue

        @given(case=strategy)
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=bool(os.environ.get("CI")))
        def fuzz(case):
            assert live.url.startswith("http://127.0.0.1:")
            response = case.call_and_validate(base_url=live.url, timeout=CALL_TIMEOUT,
                                              checks=[not_a_server_error, response_schema_conformance])
            key = f"{operation.label} ({mode.value})"
            calls[key] = calls.get(key, 0) + 1
            statuses.setdefault(key, set()).add(response.status_code)
        try:
            fuzz()
        except Unsatisfiable:  # nothing to break where every value is valid (no parameters, a free-text id)
            assert mode is schemathesis.GenerationMode.NEGATIVE
    print("schemathesis calls per operation:", calls, "statuses:", statuses)
    assert all(calls.get(f"{label} (positive)", 0) >= 1 for label in labels), calls
    assert sum(calls.values()) >= 5 * MAX_EXAMPLES, calls
    assert not any(code >= 500 for codes in statuses.values() for code in codes)
