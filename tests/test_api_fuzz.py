"""Property-based fuzzing of the API from its own /openapi.json with schemathesis (bounded here; set
WEBUI_FUZZ_EXAMPLES for a longer run): no 5xx, and the server still answers afterwards. Generation, extension and
model-unloading routes are left out of the generated cases: their inputs are fuzzed by the error tests in
test_api.py, and random sizes would turn this into a load test."""

from __future__ import annotations

import os

import pytest
import requests

SKIPPED = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/jobs", "/sdapi/v1/extra-", "/sdapi/v1/extensions/",
           "/sdapi/v1/unload-checkpoint", "/sdapi/v1/reload-checkpoint")


def test_fuzz_every_route_finds_no_server_error(webui_api_server):
    """On the run's shared API-only server, after tests/test_api.py (the same xdist group, in file order)."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    examples = int(os.environ.get("WEBUI_FUZZ_EXAMPLES", "15"))
    url = webui_api_server[0]
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    ran, failures = 0, []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith(SKIPPED):
            continue

        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case) -> None:
            nonlocal ran
            response = case.call(base_url=url, timeout=60)
            ran += 1
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, response.status_code, response.text[:200]))

        check()
    assert failures == []
    assert ran > 60
    assert requests.get(f"{url}/sdapi/v1/samplers", timeout=30).status_code == 200
    print(f"fuzzed {ran} requests, 0 server errors")
