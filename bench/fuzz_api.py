"""Long property-based fuzz run of the API with schemathesis, as its own command (the test suite runs a bounded one:
tests/test_api_fuzz.py).

Starts `webui.py --api --nowebui` on a free loopback port with a fresh data folder (or uses a running server with
--url), generates cases for every operation in /openapi.json, and counts responses by status. Fails (exit 1) on any
5xx, on a request the server does not answer at all (reset, hang), or when the server is gone afterwards.

Run:   venv/bin/python bench/fuzz_api.py [--examples 300] [--max-minutes 60] [--url http://127.0.0.1:7860]
Writes a JSON record to bench/results/fuzz-api-<time>.json. Generation, extension and model-unloading routes are
left out as in the test (random sizes would make it a load test; installs would touch the network) unless
--all-routes is given.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SKIPPED = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/jobs", "/sdapi/v1/extra-", "/sdapi/v1/extensions/",
           "/sdapi/v1/unload-checkpoint", "/sdapi/v1/reload-checkpoint")


def _fuzz_operation(operation, url: str, examples: int, deadline: float, seed: int | None,
                    failures: list[dict]) -> collections.Counter:
    """Run up to `examples` generated cases of one operation; returns the count of answers by status."""
    import requests
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed

    label = f"{operation.method.upper()} {operation.path}"
    counter: collections.Counter = collections.Counter()

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case) -> None:
        if time.time() > deadline:
            return
        try:
            response = case.call(base_url=url, timeout=120)
        except requests.RequestException as e:  # no answer at all is worse than a 5xx
            counter["no answer"] += 1
            failures.append({"operation": label, "path": case.formatted_path, "error": repr(e)[:300],
                             "body": repr(case.body)[:300]})
            return
        counter[str(response.status_code)] += 1
        if response.status_code >= 500:
            failures.append({"operation": label, "path": case.formatted_path, "status": response.status_code,
                             "response": response.text[:300], "body": repr(case.body)[:300]})

    if seed is not None:
        check = hypothesis_seed(seed)(check)
    check()
    return counter


def fuzz(url: str, examples: int, deadline: float, all_routes: bool, seed: int | None) -> dict:
    """Run the cases against `url`; returns the record (counts by operation and status, the failures)."""
    import requests
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    counts: dict[str, collections.Counter] = {}
    failures: list[dict] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if not all_routes and operation.path.startswith(SKIPPED):
            continue
        if time.time() > deadline:
            print(f"time limit reached before {label}", flush=True)
            break
        started = time.time()
        counter = counts[label] = _fuzz_operation(operation, url, examples, deadline, seed, failures)
        print(f"{label:55} {sum(counter.values()):5} cases {dict(counter)} {time.time() - started:.1f}s", flush=True)
    alive = False
    try:
        alive = requests.get(f"{url}/sdapi/v1/samplers", timeout=30).status_code == 200
    except requests.RequestException:
        pass
    total = sum(sum(c.values()) for c in counts.values())
    return {"url": url, "examples_per_operation": examples, "operations": len(counts), "cases": total,
            "server_errors": sum(1 for f in failures if "status" in f),
            "no_answer": sum(1 for f in failures if "error" in f), "alive_after": alive,
            "counts": {k: dict(v) for k, v in counts.items()}, "failures": failures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=300, help="cases per operation (default 300)")
    parser.add_argument("--max-minutes", type=float, default=60.0, help="stop generating after this long")
    parser.add_argument("--url", help="fuzz a server that is already running instead of starting one")
    parser.add_argument("--all-routes", action="store_true", help="include generation and extension routes")
    parser.add_argument("--seed", type=int, help="hypothesis seed, to repeat a run")
    args = parser.parse_args()

    with ExitStack() as stack:
        url = args.url
        if url is None:
            from tests.servers import running_webui

            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fuzz-api-")))
            url, log_path = stack.enter_context(running_webui(data_dir, "--api", "--nowebui"))
            print(f"server at {url}, log {log_path}", flush=True)
        started = time.time()
        record = fuzz(url.rstrip("/"), args.examples, started + args.max_minutes * 60, args.all_routes, args.seed)
        record["seconds"] = round(time.time() - started, 1)

    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    out = results / f"fuzz-api-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(record, indent=1), encoding="utf-8")
    print(f"\n{record['cases']} cases over {record['operations']} operations in {record['seconds']} s: "
          f"{record['server_errors']} server errors, {record['no_answer']} unanswered, "
          f"server {'still answering' if record['alive_after'] else 'GONE'}; record in {out}")
    for failure in record["failures"][:20]:
        print("  ", failure)
    return 0 if not record["failures"] and record["alive_after"] else 1


if __name__ == "__main__":
    sys.exit(main())
