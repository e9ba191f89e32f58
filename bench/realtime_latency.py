"""Realtime latency: submit on replica A -> `inquiry.sent` at 1,000 Socket.IO clients.

    python -m bench.realtime_latency [--clients 1000] [--events 60] [--interval 0.2]
        [--client python|node] [--workers 1] [--profile DIR]

Starts what it needs on this machine: a Redis of its own (redis-server on a free port, or
BENCH_REDIS_URL), a fresh PostgreSQL database (BENCH_PG_ADMIN, dropped at the end), two
`outreach serve` replicas sharing both, and two load processes (this module with `--load`),
one per replica, each holding half of the clients (python-socketio AsyncClient, or with
`--client node` socket.io-client 4.x in Node: bench/realtime_client.mjs; WebSocket
transport). `--workers N` runs each replica as `serve --workers N`; `--profile DIR` runs the
replicas under py-spy (installed by hand: it is no dependency) and writes their collapsed
stacks there. Then it POSTs inquiries to replica A one at a time, `--interval` apart, and
each load process notes when each of its clients received each event (CLOCK_MONOTONIC, one
clock for every process on the machine). Latency = event received - POST sent.

Prints p50/p90/p99/max for the clients on replica B (the event crossed Redis) and on replica
A (delivered in-process), deliveries lost, and writes every figure to
var/bench/realtime.json. Nothing here is a test: it prints what it measured. Every process
it starts is stopped in `finally`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench" / "realtime.json"
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
BASE = "/v1/api/outreach"
SOCKETIO_PATH = f"{BASE}/socket.io"
ROLES = ("OWNER", "EMPLOYEE", "CASHIER")
NODE_CLIENT = Path(__file__).with_name("realtime_client.mjs")
NODE_DIR = ROOT / "var" / "node-bench"
SOCKET_IO_CLIENT = "socket.io-client@4.8.4"


# --------------------------------------------------------------------------- small helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def summary_ms(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    ms = [v * 1000 for v in values]
    return {
        "count": len(ms),
        "p50": round(percentile(ms, 50), 2),
        "p90": round(percentile(ms, 90), 2),
        "p99": round(percentile(ms, 99), 2),
        "max": round(max(ms), 2),
        "mean": round(sum(ms) / len(ms), 2),
    }


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: exited {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants (uvicorn's workers), from /proc:
    what a fan-out costs, steadier than wall-clock latency on a shared machine."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return total
    return total + sum(cpu_seconds(int(child)) for child in children)


def py_spy() -> str:
    """py-spy on the PATH or next to this Python (`pip install py-spy`: no dependency)."""
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or str(beside)


def node_modules() -> Path:
    """socket.io-client installed once under var/ (npm, no lock file, nothing saved)."""
    package = NODE_DIR / "node_modules" / "socket.io-client" / "package.json"
    version = SOCKET_IO_CLIENT.rpartition("@")[2]
    if not (package.exists() and json.loads(package.read_text())["version"] == version):
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("--client node needs npm (Node 20)")
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--no-save", "--no-package-lock", "--no-audit", "--no-fund"]
            + ["--prefix", str(NODE_DIR), SOCKET_IO_CLIENT],
            cwd=NODE_DIR,
            check=True,
            capture_output=True,
        )
    return NODE_DIR / "node_modules"


# --------------------------------------------------------------------------- load process


async def run_load(args: argparse.Namespace) -> None:
    """`--load`: connect N clients to one replica, record receipts, report them as JSON."""
    import socketio

    tokens: list[str] = json.loads(Path(args.tokens).read_text())
    receipts: list[tuple[str, float]] = []
    clients: list[Any] = []
    sem = asyncio.Semaphore(25)
    failed = 0

    async def open_one(token: str) -> None:
        nonlocal failed
        client = socketio.AsyncClient(reconnection=False)

        def on_sent(data: dict[str, Any]) -> None:
            receipts.append((str(data["id"]), time.monotonic()))

        client.on("inquiry.sent", on_sent)
        async with sem:
            try:
                await client.connect(
                    args.url,
                    socketio_path=SOCKETIO_PATH,
                    auth={"token": token},
                    transports=["websocket"],
                    wait_timeout=30,
                )
                clients.append(client)
            except Exception:  # noqa: BLE001 - counted and reported
                failed += 1

    started = time.monotonic()
    await asyncio.gather(*(open_one(token) for token in tokens))
    ready = {"ready": len(clients), "failed": failed, "seconds": time.monotonic() - started}
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    # Wait for the coordinator to close our stdin, then report.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await asyncio.sleep(0.2)
    sys.stdout.write(json.dumps({"receipts": receipts, "connected": len(clients)}) + "\n")
    sys.stdout.flush()
    await asyncio.gather(
        *(asyncio.wait_for(c.disconnect(), 5) for c in clients), return_exceptions=True
    )


# --------------------------------------------------------------------------- coordinator


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="outreach-rt-bench-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.db_name = f"outreach_rtbench_{uuid.uuid4().hex[:8]}"
        self.database_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.db_name
        self.redis_url = os.environ.get("BENCH_REDIS_URL", "")
        self.profilers: list[subprocess.Popen[bytes]] = []
        self.replicas: list[subprocess.Popen[bytes]] = []

    def spawn(self, cmd: list[str], log_name: str, env: dict[str, str] | None = None) -> Any:
        log = (self.tmp / log_name).open("wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    async def setup_database(self) -> None:
        import asyncpg

        from outreach.config import Settings
        from outreach.models import migrate

        admin = await asyncpg.connect(PG_ADMIN, timeout=5)
        try:
            await admin.execute(f'CREATE DATABASE "{self.db_name}"')
        finally:
            await admin.close()
        await migrate(Settings(database_url=self.database_url, app_env="test"))

    async def drop_database(self) -> None:
        import asyncpg

        admin = await asyncpg.connect(PG_ADMIN, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        finally:
            await admin.close()

    def start_redis(self) -> None:
        if self.redis_url:
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found: install it or set BENCH_REDIS_URL")
        port = free_port()
        self.spawn(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--daemonize", "no"],
            "redis.log",
        )
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def start_replicas(self) -> list[str]:
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("APP_", "DATABASE_", "REDIS_", "JWKS_", "JWT_", "LOG_"))
        }
        urls = []
        started = []
        for node_id in ("301", "302"):
            port = free_port()
            env = {
                **clean,
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis_url,
                "VAR_DIR": str(self.tmp),
                "APP_ENV": "test",
                "APP_ENV_NODE_ID": node_id,
                "LOG_LEVEL": "warning",
                "SHUTDOWN_DRAIN_SECONDS": "2",
            }
            if self.args.workers > 1:
                env["APP_ENV_NODE_ID"] = "auto"
            cmd = [sys.executable, "-m", "outreach.cli", "serve", "--port", str(port)]
            cmd += ["--workers", str(self.args.workers)]
            proc = self.spawn(cmd, f"replica-{port}.log", env)
            started.append((f"http://127.0.0.1:{port}", proc, self.tmp / f"replica-{port}.log"))
        for url, proc, log in started:
            wait_http(f"{url}/healthz", proc, 60, log)
            urls.append(url)
        self.replicas = [proc for _, proc, _ in started]
        if self.args.profile:
            folder = Path(self.args.profile)
            folder.mkdir(parents=True, exist_ok=True)
            for side, (_, proc, _) in zip("AB", started, strict=True):
                self.profilers.append(
                    subprocess.Popen(
                        [py_spy(), "record", "--pid", str(proc.pid)]
                        + ["--rate", "250", "--format", "raw", "--subprocesses", "--nonblocking"]
                        + ["-o", str(folder / f"replica-{side}.txt")],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        return urls

    def stop_profilers(self) -> None:
        for profiler in self.profilers:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for profiler in self.profilers:
            try:
                profiler.wait(30)
            except subprocess.TimeoutExpired:
                profiler.kill()
        self.profilers.clear()

    def tokens_file(self, name: str, count: int) -> Path:
        from outreach.auth.devkeys import load_or_create_key, mint_token

        key = load_or_create_key(self.tmp)
        tokens = [
            mint_token(key, sub=f"{name}-{i}", roles=[ROLES[i % len(ROLES)]], ttl=3600)
            for i in range(count)
        ]
        path = self.tmp / f"tokens-{name}.json"
        path.write_text(json.dumps(tokens))
        return path

    async def start_load(self, name: str, url: str, count: int) -> asyncio.subprocess.Process:
        tokens = self.tokens_file(name, count)
        if self.args.client == "node":
            command = ["node", str(NODE_CLIENT), "--modules", str(node_modules())]
        else:
            command = [sys.executable, "-m", "bench.realtime_latency", "--load"]
        return await asyncio.create_subprocess_exec(
            *command,
            "--url",
            url,
            "--tokens",
            str(tokens),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            limit=1 << 26,  # the receipts come back as one JSON line
        )

    async def run(self) -> dict[str, Any]:
        args = self.args
        from outreach.auth.devkeys import load_or_create_key

        load_or_create_key(self.tmp)  # one development key for both replicas and the tokens
        await self.setup_database()
        self.start_redis()
        url_a, url_b = self.start_replicas()
        half = args.clients // 2
        loads: dict[str, asyncio.subprocess.Process] = {}
        try:
            loads["B"] = await self.start_load("b", url_b, args.clients - half)
            loads["A"] = await self.start_load("a", url_a, half)
            ready: dict[str, Any] = {}
            for side, proc in loads.items():
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 300)
                ready[side] = json.loads(line)
            print(f"clients connected: {json.dumps(ready)}")
            await asyncio.sleep(1.0)  # let connection set-up settle

            sent: dict[str, float] = {}
            answered: dict[str, float] = {}
            replicas = zip("AB", self.replicas, strict=True)
            watched = {f"replica{side}": proc.pid for side, proc in replicas}
            watched |= {f"load{side}": proc.pid for side, proc in loads.items()}
            cpu_before = {name: cpu_seconds(pid) for name, pid in watched.items()}
            async with httpx.AsyncClient(timeout=10) as http:
                for i in range(args.warmup + args.events):
                    body = {
                        "name": f"Bench {i}",
                        "email": f"rt-bench-{i}@example.com",
                        "message": "Xin chào, tôi muốn hỏi giá sỉ",
                    }
                    t0 = time.monotonic()
                    response = await http.post(f"{url_a}{BASE}/inquiries/submit", json=body)
                    t1 = time.monotonic()
                    response.raise_for_status()
                    if i >= args.warmup:
                        inquiry_id = response.json()["id"]
                        sent[inquiry_id] = t0
                        answered[inquiry_id] = t1
                    await asyncio.sleep(args.interval)
            await asyncio.sleep(2.0)  # stragglers
            cpu_ms_per_event = {
                name: round((cpu_seconds(pid) - cpu_before[name]) * 1000 / len(sent), 2)
                for name, pid in watched.items()
            }
            self.stop_profilers()

            results: dict[str, Any] = {}
            for side, proc in loads.items():
                assert proc.stdin is not None
                assert proc.stdout is not None
                proc.stdin.close()
                line = await asyncio.wait_for(proc.stdout.readline(), 60)
                results[side] = json.loads(line)
        finally:
            for proc in loads.values():
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.terminate()
                    try:
                        await asyncio.wait_for(proc.wait(), 10)
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()

        figures: dict[str, Any] = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "setup": {
                "clients": args.clients,
                "clientsPerReplica": {"A": half, "B": args.clients - half},
                "events": args.events,
                "intervalSeconds": args.interval,
                "transport": "websocket",
                "workersPerReplica": args.workers,
                "clientLibrary": (
                    "socket.io-client 4.8.4 (Node)"
                    if args.client == "node"
                    else "python-socketio AsyncClient (uvloop)"
                )
                + ", one load process per replica, on the same 2 cores as the replicas, "
                "Redis and PostgreSQL",
                "latency": "POST sent to replica A -> inquiry.sent received by a client",
            },
            "connected": {side: ready[side] for side in ready},
            "submitHttp": summary_ms([answered[i] - sent[i] for i in sent]),
            # CPU per event while the events were sent (incl. the 2 s of stragglers, idle):
            # each replica's processes (A also serves the POST), each load process.
            "cpuMsPerEvent": cpu_ms_per_event,
        }
        for side, label in (("B", "replicaB"), ("A", "replicaA")):
            latencies = [at - sent[i] for i, at in results[side]["receipts"] if i in sent]
            expected = results[side]["connected"] * len(sent)
            figures[label] = {
                **summary_ms(latencies),
                "expected": expected,
                "lost": expected - len(latencies),
            }
            # The first and the last client of the replica to get each event: the pipeline
            # alone, and the pipeline plus the fan-out to every client.
            first: dict[str, float] = {}
            last: dict[str, float] = {}
            for i, at in results[side]["receipts"]:
                if i in sent:
                    first[i] = min(first.get(i, at - sent[i]), at - sent[i])
                    last[i] = max(last.get(i, 0.0), at - sent[i])
            figures[label]["firstClientPerEvent"] = summary_ms(list(first.values()))
            figures[label]["lastClientPerEvent"] = summary_ms(list(last.values()))
        return figures

    async def close(self) -> None:
        self.stop_profilers()
        for proc in reversed(self.procs):
            stop(proc)
        with contextlib.suppress(Exception):
            await self.drop_database()
        shutil.rmtree(self.tmp, ignore_errors=True)


def print_table(figures: dict[str, Any]) -> None:
    print()
    print(
        f"{figures['setup']['clients']} clients ({figures['setup']['clientsPerReplica']}), "
        f"{figures['setup']['events']} events, WebSocket, "
        f"{figures['setup']['workersPerReplica']} worker(s) per replica; "
        f"clients: {figures['setup']['clientLibrary'].split(',')[0]}"
    )
    print("latency = POST sent on A -> event received")
    header = f"{'where':<34}{'count':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    print(header)
    print("-" * len(header))
    rows = [
        ("clients on B (through Redis)", figures["replicaB"]),
        ("  first client of B, per event", figures["replicaB"]["firstClientPerEvent"]),
        ("  last client of B, per event", figures["replicaB"]["lastClientPerEvent"]),
        ("clients on A (in process)", figures["replicaA"]),
        ("  first client of A, per event", figures["replicaA"]["firstClientPerEvent"]),
        ("  last client of A, per event", figures["replicaA"]["lastClientPerEvent"]),
        ("submit HTTP round trip", figures["submitHttp"]),
    ]
    for label, row in rows:
        print(
            f"{label:<34}{row.get('count', 0):>8}{row.get('p50', 0):>9}{row.get('p90', 0):>9}"
            f"{row.get('p99', 0):>9}{row.get('max', 0):>9}"
        )
    print(f"lost deliveries: B {figures['replicaB']['lost']}, A {figures['replicaA']['lost']}")
    cpu = figures["cpuMsPerEvent"]
    print(
        "CPU ms per event: "
        + ", ".join(f"{name} {value}" for name, value in sorted(cpu.items()))
        + " (replica A also serves the POST)"
    )


async def coordinate(args: argparse.Namespace) -> None:
    bench = Bench(args)
    try:
        figures = await bench.run()
    finally:
        await bench.close()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")
    print_table(figures)
    print(f"\nwritten to {OUT.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--client", choices=("python", "node"), default="python")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per replica")
    parser.add_argument("--profile", help="py-spy each replica; collapsed stacks into DIR")
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        try:
            import uvloop  # the service's own loop: less client-side overhead in the figures

            uvloop.run(run_load(args))
        except ImportError:
            asyncio.run(run_load(args))
    else:
        asyncio.run(coordinate(args))


if __name__ == "__main__":
    main()
