"""The metrics' cost on the submit's hot path, in-process vs prometheus_client's multiprocess
mode (what `serve --workers N` with METRICS_ENABLED uses): one submit's updates, timed.

    python -m bench.metrics_cost             # runs itself twice, once per mode

Nothing here is a test: it prints microseconds per submit for each mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import timeit

ROUTE = "/v1/api/outreach/inquiries/submit"
N = 200_000


def measure() -> None:
    from outreach.core.metrics import Metrics

    m = Metrics()

    def submit() -> None:  # what one submit does (http/middleware.py, inquiries/service.py)
        m.http_requests.labels("POST", ROUTE, "201").inc()
        m.http_duration.labels("POST", ROUTE).observe(0.0042)
        m.inquiries_submitted.inc()

    seconds = min(timeit.repeat(submit, number=N, repeat=5)) / N
    mode = "multiprocess" if m.multiprocess_dir else "in-process"
    print(f"{mode:<14}{seconds * 1e6:6.2f} us per submit's metric updates")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        measure()
        return
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    subprocess.run([sys.executable, "-m", "bench.metrics_cost", "--measure"], env=env, check=True)
    with tempfile.TemporaryDirectory() as folder:
        env["PROMETHEUS_MULTIPROC_DIR"] = folder
        subprocess.run(
            [sys.executable, "-m", "bench.metrics_cost", "--measure"], env=env, check=True
        )


if __name__ == "__main__":
    main()
