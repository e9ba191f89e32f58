"""`make bench`: the public and admin routes under load, with reference points, as a table.

Starts what it needs against the machine's PostgreSQL and Redis with production settings
(APP_ENV=production, a JWKS served from a local thread, Redis, metrics, info logs) and the
production environment (requirements.lock only, made once in var/bench/prod-venv), drives
load from separate processes (wrk), and prints requests/s and latency per route with the
ratios to the same process's /healthz and to pgbench's own INSERT rate. Writes every figure
to var/bench/latest.json. Nothing here is a test: it prints what it measured.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from joserfc.jwk import ECKey

from outreach.auth.devkeys import mint_token, public_jwks

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench"
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
DB_NAME = os.environ.get("BENCH_DB", "outreach_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/3")
BASE = "/v1/api/outreach"
BENCH_ISSUER = "https://id.bench.local/"
BENCH_AUDIENCE = "outreach"
ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
DURATION = int(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = 32
WARMUP = int(os.environ.get("BENCH_WARMUP_SECONDS", "2"))
# BENCH_ONLY=submit: only /healthz and the two submit runs (without and with a webhook);
# BENCH_ONLY=notify: submit with and without INQUIRY_NOTIFY_TO;
# BENCH_ONLY=ratios: the yardstick alone (Bun peer, bare hello, the service's /healthz,
# submit and subscribe, with BENCH_WORKERS server processes).
ONLY = os.environ.get("BENCH_ONLY", "")
# Every server of a run listens on BENCH_PORT_BASE + a fixed offset (PORTS).
PORT_BASE = int(os.environ.get("BENCH_PORT_BASE", "3401"))
PORTS = {
    "service": 0,
    "two_workers": 1,
    "notify": 2,  # .. 6
    "peer": 10,
    "hello": 11,
}
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))
PEER_SRC = Path(__file__).resolve().parent / "peer"
PEER_DB = DB_NAME + "_peer"

# A JSON POST whose body `make_body(n)` varies per request. The prefix is unique per wrk
# thread (math.random is not seeded per thread: both would send the same addresses in
# lockstep and queue on the same rows).
LUA_POST = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
local prefix = string.gsub(tostring({}), "[^%w]", "")
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, make_body(n, prefix))
end
"""
SUBMIT_LUA = (
    """
make_body = function(n, prefix)
  return string.format(
    '{"name":"Khách %d","email":"bench-%s-%d@example.com",' ..
    '"message":"Xin chào, tôi muốn hỏi giá sỉ %d","subject":"Wholesale"}',
    n, prefix, n, n)
end
"""
    + LUA_POST
)
SUBSCRIBE_LUA = (
    """
make_body = function(n, prefix)
  return string.format('{"email":"sub-%s-%d@example.com","source":"footer"}', prefix, n)
end
"""
    + LUA_POST
)
PGBENCH_SQL = """\\set n random(1, 4000000000000)
INSERT INTO inquiries (id, name, email, phone, subject, message, source, status, note, client_ip, user_agent, search_text, created_at, updated_at, deleted_at) VALUES ((:n)::bigint * 1024 + 1023, 'Khách', 'pgbench@example.com', NULL, 'Wholesale', 'Xin chào, tôi muốn hỏi giá sỉ', NULL, 'SENT', NULL, '127.0.0.1', 'pgbench', 'khách pgbench@example.com wholesale xin chào', now(), now(), NULL);
"""  # noqa: E501

SEED_SQL = """
ALTER TABLE inquiries DISABLE TRIGGER USER;
INSERT INTO inquiries (id, name, email, phone, subject, message, source, status, note,
                       client_ip, user_agent, search_text, created_at, updated_at, deleted_at)
SELECT
  (((extract(epoch FROM ts) * 1000)::bigint - 1704067200000) << 22) | (999 << 12) | (g % 4096),
  n, e, NULL, 'Wholesale price ' || (g % 97), m, 'https://shop.example/contact', st, NULL,
  '203.0.113.7', 'bench',
  lower(n || E'\\n' || e || E'\\n' || 'wholesale price ' || (g % 97) || E'\\n' || m), ts, ts,
  CASE WHEN g % 50 = 0 THEN ts ELSE NULL END
FROM (
  SELECT g,
    now() - interval '365 days' + (g * (interval '365 days' / {rows})) AS ts,
    (ARRAY['Nguyễn Văn','Trần Thị','Lê Hoàng','Phạm Minh','Hoàng Anh','Vũ Thu','Đặng Quốc',
           'Bùi Lan'])[1 + g % 8] || ' ' ||
    (ARRAY['An','Bình','Châu','Dũng','Giang','Hà','Khánh','Linh','Mai','Nam'])[1 + (g / 8) % 10]
      || ' ' || g AS n,
    'customer' || g || '@example.com' AS e,
    'Xin chào, tôi muốn hỏi về đơn hàng số ' || g || '. Please call me back about order '
      || (g * 7 % 100000) AS m,
    (ARRAY['SENT','IN_PROGRESS','RESOLVED','CANCELLED'])[1 + g % 4] AS st
  FROM generate_series(1, {rows}) AS g
) s;
ALTER TABLE inquiries ENABLE TRIGGER USER;
DELETE FROM row_counts WHERE tbl = 'inquiries';
INSERT INTO row_counts (tbl, status, deleted, shard, n)
SELECT 'inquiries', status, deleted_at IS NOT NULL, (id % 16)::smallint, count(*)
FROM inquiries GROUP BY 2, 3, 4;
VACUUM ANALYZE inquiries;
"""


# Response times of the seeded rows (API.md section 11), once: every row that left SENT
# answered within a day, every RESOLVED one resolved within three more. Counters and rollup
# do not change (status, deletion and creation stay), so the triggers are not needed.
TRIAGE_SQL = """
ALTER TABLE inquiries DISABLE TRIGGER USER;
UPDATE inquiries
SET first_responded_at = created_at + (id % 86400) * interval '1 second',
    resolved_at = CASE WHEN status = 'RESOLVED'
                       THEN created_at + (id % 86400 + 600 + id % 259200) * interval '1 second'
                  END
WHERE user_agent = 'bench' AND status <> 'SENT' AND first_responded_at IS NULL;
ALTER TABLE inquiries ENABLE TRIGGER USER;
VACUUM ANALYZE inquiries;
"""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


BLOCKLIST_ENTRIES = 10_000
# A third each of addresses, domains and networks (IPv4 /24 and /32, IPv6 /48 and /64), none
# covering the load's own addresses (127.0.0.1, @example.com).
BLOCKLIST_SQL = """
INSERT INTO blocklist (id, kind, value, reason, created_by, created_at, expires_at)
SELECT 8000000000000000000 + g,
       CASE g % 3 WHEN 0 THEN 'email' WHEN 1 THEN 'domain' ELSE 'ip' END,
       CASE g % 3
         WHEN 0 THEN 'bench-' || g || '@blocked-' || g || '.example.org'
         WHEN 1 THEN 'blocked-' || g || '.example.net'
         ELSE CASE g % 4
           WHEN 0 THEN '10.' || (g / 256 % 256) || '.' || (g % 256) || '.0/24'
           WHEN 1 THEN '172.16.' || (g / 256 % 256) || '.' || (g % 256)
           WHEN 2 THEN '2001:db8:' || to_hex(g) || '::/48'
           ELSE '2001:db8:ffff:' || to_hex(g) || '::/64' END
       END,
       'bench', 'bench', now(), NULL
FROM generate_series(1, {n}) AS g
"""


def seed_blocklist() -> None:
    psql("DELETE FROM blocklist WHERE reason = 'bench'")
    psql(BLOCKLIST_SQL.format(n=BLOCKLIST_ENTRIES))
    announce_blocklist()
    time.sleep(2)  # every replica reloads when the change is announced


def announce_blocklist() -> None:
    """What the service does after a change: replicas reload on this Redis message."""
    from redis import Redis

    with Redis.from_url(REDIS_URL) as redis:
        redis.publish("outreach:blocklist", b"changed")


def psql(sql: str, db: str = DB_NAME) -> str:
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + db
    result = subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def database_url() -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + DB_NAME


def prepare_database(env: dict[str, str]) -> None:
    exists = psql(f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'", "postgres")
    if not exists:
        psql(f'CREATE DATABASE "{DB_NAME}"', "postgres")
    subprocess.run(
        [sys.executable, "-m", "outreach.cli", "migrate"], env=env, check=True, capture_output=True
    )
    have = int(psql("SELECT count(*) FROM inquiries WHERE user_agent = 'bench'") or 0)
    if have < ROWS:
        log(f"seeding {ROWS:,} inquiries over the last year (once; kept for later runs)")
        psql("DELETE FROM inquiries")
        subprocess.run(
            ["psql", database_url(), "-v", "ON_ERROR_STOP=1", "-q"],
            input=SEED_SQL.format(rows=ROWS),
            text=True,
            check=True,
            capture_output=True,
        )
    if not psql(
        "SELECT 1 FROM inquiries WHERE user_agent = 'bench' AND first_responded_at IS NOT NULL "
        "LIMIT 1"
    ):
        log("giving the seeded inquiries response times (once)")
        subprocess.run(
            ["psql", database_url(), "-v", "ON_ERROR_STOP=1", "-q"],
            input=TRIAGE_SQL,
            text=True,
            check=True,
            capture_output=True,
        )
    if have >= ROWS:
        # Earlier runs' load added rows; keep the table at the seeded size.
        psql("DELETE FROM inquiries WHERE user_agent <> 'bench'")
        clear_queue()
        psql("DELETE FROM subscribers WHERE source = 'footer'")
        # An earlier run's webhook endpoint and queued jobs must not load this one.
        psql("UPDATE webhook_endpoints SET deleted_at = now(), active = false")
        psql("DELETE FROM pgqueuer")
        psql("VACUUM ANALYZE inquiries")
        psql("VACUUM ANALYZE subscribers")


def clear_queue() -> None:
    """Jobs and mail decisions an earlier run left (the notify load queues a job per submit)."""
    psql("DELETE FROM pgqueuer")
    psql("TRUNCATE pgqueuer_log, mail_log, mail_limits")


def queued_jobs() -> int:
    for attempt in range(10):  # a busy machine may refuse a connection for a moment
        try:
            sql = "SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked')"
            return int(psql(sql) or 0)
        except subprocess.CalledProcessError:
            time.sleep(0.5 * (attempt + 1))
    raise RuntimeError("the bench database does not answer")


@contextlib.contextmanager
def smtp_sink() -> Iterator[tuple[str, list[int]]]:
    """An SMTP server for the notify load: aiosmtpd in a thread of this process, counting the
    mails it accepts and keeping none (the `.eml` outbox is refused in production)."""
    import socket

    from aiosmtpd.controller import Controller

    received = [0]

    class Count:
        async def handle_DATA(self, *_: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
            received[0] += 1
            return "250 OK"

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(Count(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}?tls=off", received
    finally:
        controller.stop()


def drain(seconds: float) -> dict[str, float]:
    """How fast the queue empties once the load stops (at most `seconds`)."""
    start_jobs = queued_jobs()
    started = time.perf_counter()
    left = start_jobs
    while left and time.perf_counter() - started < seconds:
        time.sleep(1)
        left = queued_jobs()
    took = time.perf_counter() - started
    return {
        "jobs": start_jobs,
        "left": left,
        "seconds": round(took, 1),
        "jobs_per_s": round((start_jobs - left) / took, 1) if took else 0.0,
    }


@contextlib.contextmanager
def jwks_server(key: ECKey) -> Iterator[str]:
    body = json.dumps(public_jwks(key)).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()


class Receiver:
    """A local webhook receiver (a thread answering 204 to every POST), counting what came."""

    def __init__(self) -> None:
        counted = self
        self.received = 0
        self._lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with counted._lock:
                    counted.received += 1
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float) -> float:
        """Seconds until `count` messages arrived (or the timeout passed)."""
        started = time.monotonic()
        while self.received < count and time.monotonic() - started < timeout:
            time.sleep(0.1)
        return time.monotonic() - started

    def close(self) -> None:
        self._server.shutdown()


def submit_with_webhook(base: str, auth: dict[str, str], results: dict[str, Any]) -> None:
    """Submit again with one webhook endpoint subscribed to inquiry.sent (a local receiver):
    the cost of queuing (and, in the same process, delivering) a message per inquiry."""
    receiver = Receiver()
    try:
        created = httpx.post(
            base + f"{BASE}/webhooks",
            json={"url": receiver.url, "events": ["inquiry.sent"]},
            headers=auth,
            timeout=10,
        )
        created.raise_for_status()
        before = int(psql("SELECT count(*) FROM inquiries WHERE status = 'SENT'"))
        results["submit_webhook"] = wrk(base + f"{BASE}/inquiries/submit", script=SUBMIT_LUA)
        sent = int(psql("SELECT count(*) FROM inquiries WHERE status = 'SENT'")) - before
        drained = receiver.wait_for(sent, timeout=120)
        results["webhook"] = {
            "inquiries": sent,
            "delivered": receiver.received,
            "drain_seconds_after_load": round(drained, 1),
        }
        httpx.delete(
            base + f"{BASE}/webhooks/{created.json()['id']}", headers=auth, timeout=10
        ).raise_for_status()
    finally:
        receiver.close()


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the graceful drain), then SIGKILL after 30 s; reaped either way."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class WorkerProcess:
    """`outreach worker` apart from the web replica (the production layout for webhooks:
    JOBS_WORKER=false on the replicas)."""

    def __init__(self, env: dict[str, str], name: str, python: str = sys.executable) -> None:
        self.log_file = (OUT / f"worker-{name}.log").open("wb")
        self.proc = subprocess.Popen(
            [python, "-m", "outreach.cli", "worker"],
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        stop_process(self.proc)
        self.log_file.close()


def webhook_layout_runs(env: dict[str, str], python: str, auth: dict[str, str]) -> dict[str, Any]:
    """Submit on a web replica with JOBS_WORKER=false, without and with one endpoint
    subscribed to inquiry.sent, in turn on fresh servers (a run drifts as the table grows):
    `submit_apart` (no endpoint); `submit_apart_webhook` (the endpoint, its jobs queued by the
    grouped INSERT, the worker elsewhere: started after the load, to drain what was
    queued); `submit_apart_webhook_worker` (the same with an `outreach worker` process on
    this machine's 2 cores during the load)."""
    found: dict[str, Any] = {}
    runs = [
        ("submit_apart", False, None, 3411),
        ("submit_apart_webhook", True, "after", 3412),
        ("submit_apart", False, None, 3413),
        ("submit_apart_webhook", True, "after", 3414),
        ("submit_apart_webhook_worker", True, "during", 3415),
    ]
    measured: dict[str, list[dict[str, float]]] = {}
    apart = {**env, "JOBS_WORKER": "false"}
    for name, hooked, worker_when, port in runs:
        clear_queue()
        psql("VACUUM ANALYZE inquiries")
        server = Server(apart, port, python=python)
        worker: WorkerProcess | None = None
        receiver = Receiver() if hooked else None
        try:
            endpoint_id = None
            if receiver is not None:
                created = httpx.post(
                    server.url + f"{BASE}/webhooks",
                    json={"url": receiver.url, "events": ["inquiry.sent"]},
                    headers=auth,
                    timeout=10,
                )
                created.raise_for_status()
                endpoint_id = created.json()["id"]
            if worker_when == "during":
                worker = WorkerProcess(env, str(port), python)
                time.sleep(2)  # started and listening before the load
            before = int(psql("SELECT count(*) FROM inquiries WHERE status = 'SENT'"))
            figures = wrk(server.url + f"{BASE}/inquiries/submit", script=SUBMIT_LUA)
            measured.setdefault(name, []).append(figures)
            if receiver is not None:
                sent = int(psql("SELECT count(*) FROM inquiries WHERE status = 'SENT'")) - before
                at_end = receiver.received
                if worker is None:
                    worker = WorkerProcess(env, str(port), python)
                waited = receiver.wait_for(sent, timeout=60)
                found.setdefault(f"{name}_delivery", []).append(
                    {
                        "inquiries": sent,
                        "delivered_during_load": at_end,
                        "delivered": receiver.received,
                        "seconds_after_load": round(waited, 1),
                        "per_s_after_load": round((receiver.received - at_end) / waited, 1)
                        if waited
                        else 0.0,
                    }
                )
                httpx.delete(
                    server.url + f"{BASE}/webhooks/{endpoint_id}", headers=auth, timeout=10
                ).raise_for_status()
        finally:
            if worker is not None:
                worker.stop()
            if receiver is not None:
                receiver.close()
            server.stop()
    for name, all_runs in measured.items():
        found[name] = {k: sum(r[k] for r in all_runs) / len(all_runs) for k in all_runs[0]}
        found[f"{name}_runs"] = [round(r["rps"]) for r in all_runs]
    clear_queue()
    return found


def rss_mb(pid: int) -> float:
    total = 0
    for child in [pid, *children(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [int(c) for c in raw]
    return []


def production_python() -> str:
    """A Python with only what the production image installs (requirements.lock), made once
    in var/bench/prod-venv and remade when the lock changes; the server runs the working
    tree's code from it (PYTHONPATH=src). The dev environment also holds the test tools
    (aiohttp and requests, which Socket.IO imports when present: ~0.35 s of start-up)."""
    venv = OUT / "prod-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".lock-digest"
    digest = hashlib.sha256((ROOT / "requirements.lock").read_bytes()).hexdigest()
    if not (python.exists() and stamp.exists() and stamp.read_text() == digest):
        log("making the production environment (requirements.lock only; once)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            + ["--require-hashes", "-r", str(ROOT / "requirements.lock")],
            check=True,
        )
        stamp.write_text(digest)
    return str(python)


class Server:
    def __init__(
        self,
        env: dict[str, str],
        port: int,
        workers: int = 1,
        python: str = sys.executable,
        module: str = "outreach.cli",
        ready_path: str = "/readyz",
        command: list[str] | None = None,
    ) -> None:
        self.port = port
        self.ready_path = ready_path
        self.url = f"http://127.0.0.1:{port}"
        self.log_file = (OUT / f"server-{port}.log").open("wb")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            command
            or [
                python,
                "-m",
                module,
                *(["serve"] if module == "outreach.cli" else []),
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        self.ready_seconds = self._wait_ready(started)
        self.peak_mb = 0.0
        self._sampling = False

    def _wait_ready(self, started: float) -> float:
        deadline = started + 60
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited: {(OUT / f'server-{self.port}.log').read_text()[-2000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.ready_path, timeout=1).status_code == 200:
                    return time.perf_counter() - started
            time.sleep(0.02)
        raise RuntimeError("server not ready in 60 s")

    @contextlib.contextmanager
    def sample_rss(self) -> Iterator[None]:
        self._sampling = True

        def loop() -> None:
            while self._sampling:
                self.peak_mb = max(self.peak_mb, self.process_rss())
                time.sleep(0.1)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._sampling = False
            thread.join()

    def process_rss(self) -> float:
        """RSS of one server process (the worker when uvicorn runs workers)."""
        kids = children(self.proc.pid)
        return max([rss_mb(k) for k in kids] or [rss_mb(self.proc.pid)])

    def stop(self) -> None:
        stop_process(self.proc)
        self.log_file.close()


def port(name: str) -> int:
    return PORT_BASE + PORTS[name]


def peer_bun() -> str:
    """Bun at the exact version bench/peer/package.json pins, from the npm registry into
    var/bench/peer/ (once; again when the manifest changes). No lock file is written."""
    target = OUT / "peer"
    target.mkdir(parents=True, exist_ok=True)
    manifest = (PEER_SRC / "package.json").read_text()
    bun = target / "node_modules" / ".bin" / "bun"
    stamp = target / ".manifest"
    if not (bun.exists() and stamp.exists() and stamp.read_text() == manifest):
        log("installing the Bun peer's runtime (bench/peer/package.json; once)")
        (target / "package.json").write_text(manifest)
        subprocess.run(
            ["npm", "install", "--no-package-lock", "--no-audit", "--no-fund", "--silent"],
            cwd=target,
            check=True,
        )
        stamp.write_text(manifest)
    return str(bun)


def prepare_peer_database() -> str:
    """The peer's own database (BENCH_DB + `_peer`), its two tables emptied for the run."""
    if not psql(f"SELECT 1 FROM pg_database WHERE datname = '{PEER_DB}'", "postgres"):
        psql(f'CREATE DATABASE "{PEER_DB}"', "postgres")
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + PEER_DB
    subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(PEER_SRC / "schema.sql")],
        check=True,
        capture_output=True,
    )
    return url


def yardstick(env: dict[str, str], python: str, workers: int = 1) -> dict[str, Any]:
    """The reference points of the ratios, in this run: the Bun peer's submit and subscribe
    (bench/peer/server.ts: the same body, three fields checked, a Snowflake id, one INSERT …
    RETURNING into its own database) and a bare ASGI hello on the service's own server
    (bench/hello.py, `workers` processes)."""
    found: dict[str, Any] = {}
    url = prepare_peer_database()
    bun = peer_bun()
    peer_env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PORT": str(port("peer")),
        "DATABASE_URL": url.replace("postgresql://", "postgres://", 1),
        "DB_POOL_SIZE": env.get("DB_POOL_SIZE", "10"),
    }
    peer = Server(
        peer_env, port("peer"), command=[bun, str(PEER_SRC / "server.ts")], ready_path="/healthz"
    )
    try:
        found["peer_version"] = subprocess.run(
            [bun, "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        found["peer_submit"] = wrk(peer.url + "/submit", script=SUBMIT_LUA)
        found["peer_subscribe"] = wrk(peer.url + "/subscribe", script=SUBSCRIBE_LUA)
        found["peer_rss_mb"] = round(rss_mb(peer.proc.pid), 1)
    finally:
        peer.stop()
    hello_env = {**env, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    hello = Server(
        hello_env, port("hello"), workers=workers, python=python, module="bench.hello",
        ready_path="/",
    )  # fmt: skip
    try:
        found["bare_hello"] = wrk(hello.url + "/")
    finally:
        hello.stop()
    return found


def ratio_figures(r: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The issue-18 ratios of one run, and their lines of the report."""
    flat: dict[str, Any] = {
        "submit_ratio_peer": round(r["submit"]["rps"] / r["peer_submit"]["rps"], 3),
        "subscribe_ratio_peer": round(r["subscribe"]["rps"] / r["peer_subscribe"]["rps"], 3),
        "healthz_ratio_bare": round(r["healthz"]["rps"] / r["bare_hello"]["rps"], 3),
        "ratio_workers": r.get("ratio_workers", 1),
        "peer_bun_version": r["peer_version"],
        "peer_rss_mb": r["peer_rss_mb"],
    }
    for name in ("peer_submit", "peer_subscribe", "bare_hello"):
        flat.update({f"{name}_{k}": round(v, 2) for k, v in r[name].items()})
    if "submit_2_workers" in r:
        flat["submit_2_workers_ratio_peer"] = round(
            r["submit_2_workers"]["rps"] / r["peer_submit"]["rps"], 3
        )
    w = flat["ratio_workers"]
    lines = [
        f"yardstick (Bun {r['peer_version']}, one process; service {w} worker(s)): "
        f"submit x{flat['submit_ratio_peer']:.2f} of the Bun peer "
        f"({r['submit']['rps']:.0f} / {r['peer_submit']['rps']:.0f} req/s), "
        f"subscribe x{flat['subscribe_ratio_peer']:.2f} "
        f"({r['subscribe']['rps']:.0f} / {r['peer_subscribe']['rps']:.0f}), "
        f"/healthz x{flat['healthz_ratio_bare']:.2f} of the bare hello "
        f"({r['healthz']['rps']:.0f} / {r['bare_hello']['rps']:.0f})"
    ]
    if "submit_2_workers_ratio_peer" in flat:
        lines.append(
            f"submit with 2 workers: x{flat['submit_2_workers_ratio_peer']:.2f} of the Bun peer"
        )
    return flat, lines


def report_ratios(r: dict[str, Any]) -> None:
    """BENCH_ONLY=ratios: the yardstick's table and ratios, into latest.json."""
    flat, ratio_lines = ratio_figures(r)
    lines = [f"{'route (c32)':<28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"]
    for name in ("peer_submit", "peer_subscribe", "bare_hello", "healthz", "submit", "subscribe"):
        m = r[name]
        lines.append(
            f"{name:<28}{m['rps']:>9.0f}{m['p50_ms']:>9.1f}{m['p99_ms']:>9.1f}{m['errors']:>8.0f}"
        )
        flat.update({f"{name}_{k}": round(v, 2) for k, v in m.items()})
    print("\n".join(lines + ratio_lines))
    flat.update({f"machine_{k}": v for k, v in r["machine"].items() if isinstance(v, int | float)})
    (OUT / "latest.json").write_text(json.dumps({**flat, "machine": r["machine"]}, indent=2))
    log(f"figures written to {OUT / 'latest.json'}")


def wrk(
    url: str,
    *,
    script: str | None = None,
    headers: dict[str, str] | None = None,
    seconds: int = DURATION,
    connections: int = CONNECTIONS,
    warmup: int = WARMUP,
) -> dict[str, float]:
    """wrk's figures for `url`, after `warmup` seconds of the same load that are not counted
    (the route's first requests prepare statements and fill caches: steady state is what a
    burst of traffic meets)."""
    if warmup:
        wrk(url, script=script, headers=headers, seconds=warmup, connections=connections, warmup=0)
    threads = min(2, connections)
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    args += ["--timeout", "5s"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        if script:
            fh.write(script)
    if script:
        args += ["-s", fh.name]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    os.unlink(fh.name)
    return parse_wrk(out)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(out: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {
        int(p): _ms(v, u)
        for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if socket:
        errors += sum(int(x) for x in socket.groups())
    return {"rps": rps, "p50_ms": pct.get(50, 0.0), "p99_ms": pct.get(99, 0.0), "errors": errors}


def pgbench(table: str = "inquiries") -> float:
    """PostgreSQL's own rate for the service's INSERT, prepared, at the same concurrency."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as fh:
        fh.write(PGBENCH_SQL.replace("INSERT INTO inquiries", f"INSERT INTO {table}"))
    out = subprocess.run(
        [
            "pgbench",
            "-n",
            "-M",
            "prepared",
            "-c",
            str(CONNECTIONS),
            "-j",
            "2",
            "-T",
            str(DURATION),
            "-f",
            fh.name,
            database_url(),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(fh.name)
    psql(f"DELETE FROM {table} WHERE user_agent = 'pgbench'")
    return float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]


def latency_series(url: str, headers: dict[str, str], n: int = 20) -> dict[str, float]:
    times = []
    with httpx.Client(headers=headers, timeout=30) as client:
        client.get(url).raise_for_status()  # warm
        for _ in range(n):
            started = time.perf_counter()
            client.get(url).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50_ms": times[len(times) // 2], "p99_ms": times[-1], "max_ms": times[-1]}


def main() -> int:
    for tool in ("wrk", "pgbench", "psql", *(() if ONLY in ("submit", "notify") else ("npm",))):
        if shutil.which(tool) is None:
            log(f"{tool} is required (Debian wrk, postgresql-client): run make setup-system")
            return 2
    OUT.mkdir(parents=True, exist_ok=True)
    key = ECKey.generate_key("P-256", auto_kid=True)
    owner = mint_token(
        key,
        sub="bench-owner",
        roles=["OWNER"],
        ttl=3600,
        issuer=BENCH_ISSUER,
        audience=BENCH_AUDIENCE,
    )
    auth = {"Authorization": f"Bearer {owner}"}
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "rows": ROWS,
            "connections": CONNECTIONS,
            "seconds": DURATION,
        }
    }
    with jwks_server(key) as jwks_url:
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(
                    ("APP_", "DATABASE_", "REDIS_", "JWKS_", "JWT_", "TOKEN_", "PUBLIC_")
                )
            },
            "APP_ENV": "production",
            "DATABASE_URL": database_url(),
            "REDIS_URL": REDIS_URL,
            "JWKS_URL": jwks_url,
            "JWT_ISSUER": BENCH_ISSUER,
            "JWT_AUDIENCE": BENCH_AUDIENCE,
            "PUBLIC_BASE_URL": "https://shop.example",
            "TOKEN_SECRET": "bench-token-secret-" + "x" * 32,
            "METRICS_ENABLED": "true",
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "info"),
            "APP_ENV_NODE_ID": "auto",
            "VAR_DIR": str(OUT / "var"),
            # The webhook run's receiver is on 127.0.0.1 over http.
            "WEBHOOK_ALLOW_PRIVATE": "true",
        }
        # The working tree's code, for the migrations too (not the installed package's).
        env["PYTHONPATH"] = str(ROOT / "src")
        prepare_database(env)
        python = production_python()
        if ONLY == "notify":  # BENCH_ONLY=notify: just submit with and without mail
            results.update(notify_runs(env, python))
            report_notify(results)
            return 0
        if ONLY not in ("submit", "notify"):
            results.update(yardstick(env, python, WORKERS if ONLY == "ratios" else 1))
            results["ratio_workers"] = WORKERS if ONLY == "ratios" else 1
        if ONLY == "ratios":
            server = Server(env, port("service"), workers=WORKERS, python=python)
            try:
                results["healthz"] = wrk(server.url + "/healthz")
                results["submit"] = wrk(server.url + f"{BASE}/inquiries/submit", script=SUBMIT_LUA)
                results["subscribe"] = wrk(
                    server.url + f"{BASE}/subscribers/subscribe", script=SUBSCRIBE_LUA
                )
            finally:
                server.stop()
            report_ratios(results)
            return 0
        # BENCH_WORKERS=2: the same runs against `serve --workers 2` (metrics multiprocess mode).
        server = Server(env, port("service"), workers=WORKERS, python=python)
        try:
            results["ready_seconds"] = round(server.ready_seconds, 3)
            time.sleep(1)
            results["idle_rss_mb"] = round(server.process_rss(), 1)
            with server.sample_rss():
                base = server.url
                results["healthz"] = wrk(base + "/healthz")
                if ONLY == "submit":
                    results["submit"] = wrk(base + f"{BASE}/inquiries/submit", script=SUBMIT_LUA)
                    psql("VACUUM ANALYZE inquiries")
                    submit_with_webhook(base, auth, results)
            if ONLY == "submit":
                results["peak_rss_mb"] = round(server.peak_mb, 1)
                server.stop()
                results.update(webhook_layout_runs(env, python, auth))
                return report_submit(results)
            with server.sample_rss():
                # Reads first, on the seeded table, before the write runs add rows and wake
                # autovacuum. One staff member at a time: the latency a person sees.
                results["list_c1"] = wrk(base + f"{BASE}/inquiries", headers=auth, connections=1)
                results["search_c1"] = wrk(
                    base + f"{BASE}/inquiries?q=kh%C3%A1nh%2012", headers=auth, connections=1
                )
                results["list"] = wrk(base + f"{BASE}/inquiries", headers=auth)
                results["search"] = wrk(base + f"{BASE}/inquiries?q=kh%C3%A1nh%2012", headers=auth)
                results["statistics"] = latency_series(
                    base
                    + f"{BASE}/statistics/inquiries?tz=Asia/Ho_Chi_Minh&from="
                    + time.strftime("%Y-%m-%d", time.gmtime(time.time() - 364 * 86400))
                    + "&to="
                    + time.strftime("%Y-%m-%d", time.gmtime()),
                    auth,
                )
                results["submit"] = wrk(base + f"{BASE}/inquiries/submit", script=SUBMIT_LUA)
                psql("VACUUM ANALYZE inquiries")
                # The same submit load with a blocklist of BLOCKLIST_ENTRIES (none of which
                # matches): the in-memory matcher's cost on the hot path.
                seed_blocklist()
                try:
                    results["submit_blocklist"] = wrk(
                        base + f"{BASE}/inquiries/submit", script=SUBMIT_LUA
                    )
                finally:
                    psql("DELETE FROM blocklist WHERE reason = 'bench'")
                    announce_blocklist()
                psql("VACUUM ANALYZE inquiries")
                submit_with_webhook(base, auth, results)
                # Let PostgreSQL's autovacuum of those ~40,000 rows not land in the next run.
                psql("VACUUM ANALYZE inquiries")
                psql("VACUUM ANALYZE subscribers")
                results["subscribe"] = wrk(
                    base + f"{BASE}/subscribers/subscribe", script=SUBSCRIBE_LUA
                )
            results["peak_rss_mb"] = round(server.peak_mb, 1)
        finally:
            server.stop()
        results["pgbench_tps"] = pgbench()
        # The same INSERT without the counters' triggers (ADR 0007): PostgreSQL's raw ceiling.
        psql("DROP TABLE IF EXISTS inquiries_plain")
        psql("CREATE TABLE inquiries_plain (LIKE inquiries INCLUDING ALL)")
        try:
            results["pgbench_plain_tps"] = pgbench("inquiries_plain")
        finally:
            psql("DROP TABLE IF EXISTS inquiries_plain")
        try:
            two = Server(env, port("two_workers"), workers=2, python=python)
            try:
                results["submit_2_workers"] = wrk(
                    two.url + f"{BASE}/inquiries/submit", script=SUBMIT_LUA
                )
            finally:
                two.stop()
        except RuntimeError as exc:
            log(f"2 workers: {exc}")
        results.update(notify_runs(env, python))
    report(results)
    return 0


def notify_runs(env: dict[str, str], python: str) -> dict[str, Any]:
    """Submit with INQUIRY_NOTIFY_TO set, next to submit without, in one run (issue 15: the
    job rides in the submit's grouped statement). Three servers in turn on the same table:
    without mail (`submit_plain`); with the notify job queued and this process's worker off
    (`submit_notify`: the hot path's own cost, as with `outreach worker` elsewhere); with the
    worker in the process sending through an SMTP sink while the load runs
    (`submit_notify_worker`: the whole cost on one core). Then how fast the worker drains."""
    found: dict[str, Any] = {}
    with smtp_sink() as (smtp_url, received):
        mail = {"SMTP_URL": smtp_url, "INQUIRY_NOTIFY_TO": "staff@shop.example"}
        # Plain and notify twice, in turn (a run drifts by some percent as the table grows):
        # each figure is the mean of its two runs.
        runs = [
            ("submit_plain", {}, port("notify") + 0),
            ("submit_notify", {**mail, "JOBS_WORKER": "false"}, port("notify") + 1),
            ("submit_plain", {}, port("notify") + 3),
            ("submit_notify", {**mail, "JOBS_WORKER": "false"}, port("notify") + 4),
            ("submit_notify_worker", mail, port("notify") + 2),
        ]
        measured: dict[str, list[dict[str, float]]] = {}
        for name, extra, at in runs:
            clear_queue()
            psql("VACUUM ANALYZE inquiries")
            server = Server({**env, **extra}, at, python=python)
            try:
                figures = wrk(server.url + f"{BASE}/inquiries/submit", script=SUBMIT_LUA)
                measured.setdefault(name, []).append(figures)
                if name == "submit_notify":
                    found["notify_jobs_queued"] = queued_jobs()
                if name == "submit_notify_worker":
                    found["notify_drain"] = drain(120)
                    found["notify_mails_received"] = received[0]
            finally:
                server.stop()
        for name, all_runs in measured.items():
            found[name] = {k: sum(r[k] for r in all_runs) / len(all_runs) for k in all_runs[0]}
            found[f"{name}_runs"] = [round(r["rps"]) for r in all_runs]
        clear_queue()
    return found


def notify_line(r: dict[str, Any], flat: dict[str, Any]) -> str:
    """The notify runs' figures (into `flat`) and their line of the report."""
    plain = r["submit_plain"]["rps"]
    flat["notify_ratio"] = round(r["submit_notify"]["rps"] / plain, 3)
    flat["notify_worker_ratio"] = round(r["submit_notify_worker"]["rps"] / plain, 3)
    flat["notify_jobs_queued"] = r["notify_jobs_queued"]
    d = r["notify_drain"]
    flat.update({f"notify_drain_{k}": v for k, v in d.items()})
    return (
        f"submit with INQUIRY_NOTIFY_TO (job queued in the grouped INSERT): "
        f"{r['submit_notify']['rps']:.0f} req/s {r['submit_notify_runs']} = "
        f"x{flat['notify_ratio']:.2f} of {plain:.0f} without {r['submit_plain_runs']} "
        f"({r['notify_jobs_queued']} jobs queued); with the worker "
        f"sending in the same process: x{flat['notify_worker_ratio']:.2f}; the worker then "
        f"drained {d['jobs'] - d['left']:.0f} jobs in {d['seconds']} s "
        f"({d['jobs_per_s']} jobs/s, {r['notify_mails_received']} mails received)"
    )


def report_notify(r: dict[str, Any]) -> None:
    flat: dict[str, Any] = {}
    lines = [f"{'route (c32)':<28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"]
    for name in ("submit_plain", "submit_notify", "submit_notify_worker"):
        m = r[name]
        lines.append(
            f"{name:<28}{m['rps']:>9.0f}{m['p50_ms']:>9.1f}{m['p99_ms']:>9.1f}{m['errors']:>8.0f}"
        )
        flat.update({f"{name}_{k}": round(v, 2) for k, v in m.items()})
    lines.append(notify_line(r, flat))
    print("\n".join(lines))
    (OUT / "notify.json").write_text(json.dumps(flat, indent=2))
    log(f"figures written to {OUT / 'notify.json'}")


def report_submit(r: dict[str, Any]) -> int:
    """BENCH_ONLY=submit: submit without and with one webhook endpoint."""
    lines = [f"{'route (c32)':<28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"]
    for name in ("healthz", "submit", "submit_webhook"):
        m = r[name]
        lines.append(
            f"{name:<28}{m['rps']:>9.0f}{m['p50_ms']:>9.1f}{m['p99_ms']:>9.1f}{m['errors']:>8.0f}"
        )
    hook = r["webhook"]
    lines.append(
        f"in-process worker: with a webhook / without: "
        f"x{r['submit_webhook']['rps'] / r['submit']['rps']:.2f}; "
        f"{hook['delivered']} of {hook['inquiries']} inquiries delivered, "
        f"{hook['drain_seconds_after_load']} s after the load"
    )
    if "submit_apart" in r:
        lines.append("web replica with JOBS_WORKER=false (runs in turn, means):")
        for name in ("submit_apart", "submit_apart_webhook", "submit_apart_webhook_worker"):
            m = r[name]
            lines.append(
                f"{name:<28}{m['rps']:>9.0f}{m['p50_ms']:>9.1f}{m['p99_ms']:>9.1f}"
                f"{m['errors']:>8.0f}  {r[f'{name}_runs']}"
            )
        plain = r["submit_apart"]["rps"]
        lines.append(
            f"worker elsewhere (started after the load): "
            f"x{r['submit_apart_webhook']['rps'] / plain:.2f} of without; "
            f"`outreach worker` on the same 2 cores during the load: "
            f"x{r['submit_apart_webhook_worker']['rps'] / plain:.2f}"
        )
        for name in ("submit_apart_webhook", "submit_apart_webhook_worker"):
            for d in r[f"{name}_delivery"]:
                lines.append(
                    f"  {name}: {d['delivered']} of {d['inquiries']} delivered "
                    f"({d['delivered_during_load']} during the load), then "
                    f"{d['per_s_after_load']}/s for {d['seconds_after_load']} s"
                )
    print("\n".join(lines))
    (OUT / "latest-submit.json").write_text(json.dumps(r, indent=2))
    return 0


def report(r: dict[str, Any]) -> None:
    healthz = r["healthz"]["rps"]
    flat: dict[str, Any] = {
        "ready_seconds": r["ready_seconds"],
        "idle_rss_mb": r["idle_rss_mb"],
        "peak_rss_mb": r["peak_rss_mb"],
        "pgbench_tps": r["pgbench_tps"],
        "pgbench_plain_tps": r["pgbench_plain_tps"],
    }
    lines = [
        f"{'route (c32 unless _c1)':<28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'/healthz':>10}{'/pgbench':>10}"
    ]
    for name in (
        "peer_submit",
        "peer_subscribe",
        "bare_hello",
        "healthz",
        "submit",
        "submit_blocklist",
        "submit_webhook",
        "subscribe",
        "list",
        "search",
        "list_c1",
        "search_c1",
        "submit_2_workers",
        "submit_plain",
        "submit_notify",
        "submit_notify_worker",
    ):
        if name not in r:
            continue
        m = r[name]
        ratio_h = m["rps"] / healthz
        ratio_pg = m["rps"] / r["pgbench_tps"]
        lines.append(
            f"{name:<28}{m['rps']:>9.0f}{m['p50_ms']:>9.1f}{m['p99_ms']:>9.1f}{m['errors']:>8.0f}"
            f"{ratio_h:>10.2f}{ratio_pg:>10.2f}"
        )
        for key in ("rps", "p50_ms", "p99_ms", "errors"):
            flat[f"{name}_{key}"] = round(m[key], 2)
        flat[f"{name}_ratio_healthz"] = round(ratio_h, 3)
        flat[f"{name}_ratio_pgbench"] = round(ratio_pg, 3)
    if "submit_blocklist" in r:
        flat["blocklist_entries"] = BLOCKLIST_ENTRIES
        flat["submit_blocklist_vs_submit"] = round(
            r["submit_blocklist"]["rps"] / r["submit"]["rps"], 3
        )
    if "webhook" in r:
        flat.update({f"webhook_{k}": v for k, v in r["webhook"].items()})
        lines.append(
            f"webhook: {r['webhook']['delivered']} of {r['webhook']['inquiries']} inquiries "
            f"delivered, {r['webhook']['drain_seconds_after_load']} s after the load"
        )
    if "submit_2_workers" in r:
        flat["workers_2_scaling"] = round(r["submit_2_workers"]["rps"] / r["submit"]["rps"], 2)
    stats = r["statistics"]
    flat["statistics_p50_ms"] = round(stats["p50_ms"], 1)
    flat["statistics_max_ms"] = round(stats["max_ms"], 1)
    lines += [
        "",
        f"statistics, a year by day (sequential x20): p50 {stats['p50_ms']:.0f} ms, "
        f"max {stats['max_ms']:.0f} ms",
        f"pgbench single-row INSERT, prepared, c32: {r['pgbench_tps']:.0f} tx/s "
        f"({r['pgbench_plain_tps']:.0f} into a copy without the counters' triggers)",
        f"ready in {r['ready_seconds']:.2f} s; RSS idle {r['idle_rss_mb']:.0f} MB, "
        f"peak {r['peak_rss_mb']:.0f} MB",
    ]
    if "submit_blocklist_vs_submit" in flat:
        lines.append(
            f"submit with {BLOCKLIST_ENTRIES:,} blocklist entries: "
            f"x{flat['submit_blocklist_vs_submit']:.2f} of submit without"
        )
    if "submit_notify" in r:
        lines.append(notify_line(r, flat))
    if "workers_2_scaling" in flat:
        lines.append(
            f"2 workers / 1 worker (submit): x{flat['workers_2_scaling']:.2f} "
            f"on {os.cpu_count()} cores"
        )
    if "peer_submit" in r:
        ratios, ratio_lines = ratio_figures(r)
        flat.update(ratios)
        lines += ratio_lines
    flat.update({f"machine_{k}": v for k, v in r["machine"].items() if isinstance(v, int | float)})
    print("\n".join(lines))
    (OUT / "latest.json").write_text(json.dumps({**flat, "machine": r["machine"]}, indent=2))
    log(f"figures written to {OUT / 'latest.json'}")


if __name__ == "__main__":
    sys.exit(main())
