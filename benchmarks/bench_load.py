"""Load test of `attnstore serve`: 16 concurrent clients replaying clicks for 60 s, loopback only.

Builds (or reuses) a real-size synthetic store (30 layers x 9 heads, 3 x 5 tiles: 1154 keys,
20 images), starts `attnstore serve` in a subprocess for each server variant (one process with
threads; gunicorn with N workers), and runs `--clients` threads against it. Each client replays
its own seeded click script: a click is (image, token, layer, head, mode) posted to
`/api/generate_attention_map` (the REST form of a click in the explorer: the same heatmap
pipeline, plus a PNG), most clicks change the layer or head of the current token, some pick
another token or image, some switch to an aggregate map (mean / max / entropy-weighted top-k
over the heads, the layers, or everything). Clients wait `--think` seconds between clicks
(0 = as fast as the server answers). Every run stops by itself after `--duration` seconds (and
at most `--max-requests` requests); the server is stopped with Ctrl+C (SIGINT).

Prints per variant: requests, errors (non-200 answer, `"success": true` missing, timeout or
connection error), throughput, latency p50/p95/p99/max, the server's CPU time per request (its
processes' user + system time: the figure that does not depend on what else runs on the machine),
against the goal (0 errors, p95 <= 250 ms).

`--slow N` measures slow clients instead: per variant, the normal clients' load without and then
with N stalled connections held open (each sends part of a request, half stop inside the headers,
half inside a declared body, then send nothing; at most 5,000, all closed at the end of the run).
Prints the normal clients' requests, errors and p50/p95 in both phases, and how many of the stalled
connections the server still held at the end. Goal: the same 0 errors, p95 <= 250 ms with them.

    .venv/bin/python benchmarks/bench_load.py [--store PATH] [--workers 0 2] [--clients 16] [--duration 60]
    .venv/bin/python benchmarks/bench_load.py --quick        # 10 s per variant
    .venv/bin/python benchmarks/bench_load.py --slow 1000 --clients 4 --duration 15
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import free_port, host_load, percentiles, print_table, wait_until_serving  # noqa: E402

HOST = "127.0.0.1"  # loopback only: this script never loads another machine
GOAL_P95_MS = 250.0
MAX_SLOW = 5000  # stalled connections at most (each is one file descriptor here and one in the server)
# (mode, over) of a click; "head" most often, as in the explorer.
MODES = [("head", "heads")] * 6 + [("mean", "heads"), ("max", "heads"), ("entropy_topk", "heads")]
MODES += [("mean", "layers"), ("entropy_topk", "all")]


def build_store(path: str) -> str:
    from attnstore.extraction.synthetic import make_synthetic_store

    start = time.perf_counter()
    make_synthetic_store(path, n_images=20, n_layers=30, n_heads=9, grids=[(3, 5)], n_answer=80, image_size=(800, 480))
    print(f"built real-size store {path} in {time.perf_counter() - start:.0f} s")
    return path


def start_server(store: str, port: int, workers: int) -> subprocess.Popen:
    cli = [sys.executable, "-c", "from attnstore.cli import run; run()", "serve", store, "--port", str(port)]
    cli += ["--workers", str(workers)]
    proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return wait_until_serving(proc, f"http://{HOST}:{port}/api/initialize", timeout=120)


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def token_rows(port: int, n_images: int) -> dict[int, list[int]]:
    """Sequence positions with a stored row (the clickable tokens), per image."""
    rows = {}
    for image in range(n_images):
        with urllib.request.urlopen(f"http://{HOST}:{port}/api/initialize?image={image}", timeout=30) as r:
            rows[image] = json.loads(r.read())["query_positions"]
    return rows


def click_script(seed: int, rows: dict[int, list[int]], n_layers: int, n_heads: int, n: int = 2000) -> list[dict]:
    """A user's clicks: mostly layer/head changes on the current token, sometimes a new token or image."""
    rng = random.Random(seed)
    image = rng.choice(list(rows))
    token, layer, head = rng.choice(rows[image]), rng.randrange(n_layers), 0
    clicks = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.05:
            image = rng.choice(list(rows))
            token = rng.choice(rows[image])
        elif roll < 0.25:
            token = rng.choice(rows[image])
        elif roll < 0.65:
            layer = (layer + rng.choice((-1, 1))) % n_layers
        else:
            head = rng.randrange(n_heads)
        mode, over = rng.choice(MODES)
        clicks.append({"image": image, "token_index": token, "layer": layer, "head": head, "mode": mode, "over": over})
    return clicks


def server_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by the server process and its live children (gunicorn workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def client(port: int, clicks: list[dict], until: float, think: float, budget: threading.Semaphore, tally: Tally):
    """Replays `clicks` (cyclically) until the deadline; one keep-alive connection, reopened after an error."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    i = 0
    while time.perf_counter() < until and budget.acquire(blocking=False):
        body = json.dumps(clicks[i % len(clicks)])
        i += 1
        start = time.perf_counter()
        try:
            conn.request("POST", "/api/generate_attention_map", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            elapsed = (time.perf_counter() - start) * 1000
            error = None if response.status == 200 and b'"success":true' in data else f"HTTP {response.status}"
        except (OSError, http.client.HTTPException) as err:
            elapsed, error = (time.perf_counter() - start) * 1000, type(err).__name__
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
        with tally.lock:
            tally.latencies_ms.append(elapsed)
            if error:
                tally.errors.append(error)
        if think:
            time.sleep(think)
    conn.close()


def run_load(port: int, scripts: list[list[dict]], seconds: float, think: float, max_requests: int) -> Tally:
    tally = Tally()
    budget = threading.Semaphore(max_requests)
    until = time.perf_counter() + seconds
    threads = [
        threading.Thread(target=client, args=(port, s, until, think, budget, tally), daemon=True) for s in scripts
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return tally


def open_stalled(port: int, n: int) -> list[socket.socket]:
    """n connections that send part of a request and then nothing: half stop inside the headers,
    half inside a body they declared (1,000 bytes, 1 sent). Connections the server refuses are skipped."""
    head = f"POST /api/generate_attention_map HTTP/1.1\r\nHost: {HOST}:{port}\r\n".encode()
    partial = (head + b"Content-Type: appl", head + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    socks = []
    for i in range(min(n, MAX_SLOW)):
        try:
            sock = socket.create_connection((HOST, port), timeout=5)
            sock.sendall(partial[i % 2])
        except OSError:
            continue
        socks.append(sock)
    return socks


def still_open(socks: list[socket.socket]) -> int:
    """How many of `socks` the server has not closed (a closed one reads as end of file)."""
    count = 0
    for sock in socks:
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable or sock.recv(1, socket.MSG_PEEK):
                count += 1
        except OSError:
            pass
    return count


def slow_run(port: int, scripts: list[list[dict]], args) -> list:
    """Normal clients' load without, then with `args.slow` stalled connections: one table row."""
    calm = run_load(port, scripts, args.duration, args.think, args.max_requests)
    socks = open_stalled(port, args.slow)
    try:
        loaded = run_load(port, scripts, args.duration, args.think, args.max_requests)
        held = still_open(socks)
    finally:
        for sock in socks:
            sock.close()
    return [*phase(calm), f"{held}/{len(socks)}", *phase(loaded)]


def phase(tally: Tally) -> list:
    if not tally.latencies_ms:
        return [0, len(tally.errors), "-", "-"]
    p50, p95 = percentiles(tally.latencies_ms, (50, 95))
    errors = f"{len(tally.errors)}" + (f" ({sorted(set(tally.errors))[0]}...)" if tally.errors else "")
    return [len(tally.latencies_ms), errors, f"{p50:.0f}", f"{p95:.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", help="existing store (default: build a real-size synthetic one in a temp dir)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="server variants (0 = threads)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of measured load per variant")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of unmeasured load first")
    parser.add_argument("--think", type=float, default=0.0, help="seconds each client waits between clicks")
    parser.add_argument("--max-requests", type=int, default=200_000, help="hard cap per variant")
    parser.add_argument("--quick", action="store_true", help="10 s per variant")
    parser.add_argument("--slow", type=int, default=0, help=f"stalled connections (at most {MAX_SLOW}): see above")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = 10.0, 3.0

    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or build_store(str(Path(tmp) / "load.zarr"))
        rows_table = []
        for workers in args.workers:
            port = free_port(HOST)
            server = start_server(store, port, workers)
            try:
                info = json.loads(urllib.request.urlopen(f"http://{HOST}:{port}/api/initialize", timeout=30).read())
                rows = token_rows(port, info["num_images"])
                scripts = [
                    click_script(seed, rows, info["num_layers"], info["num_heads"]) for seed in range(args.clients)
                ]
                run_load(port, scripts, args.warmup, args.think, args.max_requests)
                load_before = host_load()
                if args.slow:
                    rows_table.append([variant_name(workers), *slow_run(port, scripts, args)])
                    print(f"  {rows_table[-1][0]}: done ({load_before} before the run)", flush=True)
                    continue
                cpu_before = server_cpu_seconds(server.pid)
                tally = run_load(port, scripts, args.duration, args.think, args.max_requests)
                cpu = server_cpu_seconds(server.pid) - cpu_before
            finally:
                stop_server(server)
            rows_table.append(summary(workers, tally, args.duration, cpu))
            print(f"  {rows_table[-1][0]}: done ({load_before} before the run)", flush=True)
        if args.slow:
            print_table(
                f"{args.clients} normal clients, {args.duration:.0f} s without then {args.duration:.0f} s with "
                f"{args.slow} stalled connections, per variant",
                ["server", "requests", "errors", "p50 ms", "p95 ms", "stalled held"]
                + ["requests (stalled)", "errors (stalled)", "p50 ms (stalled)", "p95 ms (stalled)"],
                rows_table,
                caption=f"stalled held: connections the server still held open at the end; {host_load()}",
            )
            return
        print_table(
            f"{args.clients} clients, {args.duration:.0f} s per variant, think {args.think} s, "
            f"{info['num_layers']} layers x {info['num_heads']} heads, {info['num_images']} images",
            ["server", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "CPU ms/req", "goal"],
            rows_table,
            caption=f"goal: 0 errors, p95 <= {GOAL_P95_MS:.0f} ms; CPU ms/req: the server's processes' CPU time per "
            f"request (does not depend on other load); {host_load()}",
        )


def variant_name(workers: int) -> str:
    return "one process (threads)" if workers == 0 else f"--workers {workers}"


def summary(workers: int, tally: Tally, seconds: float, cpu_seconds: float) -> list:
    name = variant_name(workers)
    if not tally.latencies_ms:
        return [name, 0, len(tally.errors), 0, "-", "-", "-", "-", "-", "MISSED"]
    p50, p95, p99 = percentiles(tally.latencies_ms, (50, 95, 99))
    ok = not tally.errors and p95 <= GOAL_P95_MS
    errors = f"{len(tally.errors)}" + (f" ({sorted(set(tally.errors))[0]}...)" if tally.errors else "")
    return [
        name,
        len(tally.latencies_ms),
        errors,
        f"{len(tally.latencies_ms) / seconds:.1f}",
        f"{p50:.0f}",
        f"{p95:.0f}",
        f"{p99:.0f}",
        f"{max(tally.latencies_ms):.0f}",
        f"{cpu_seconds * 1000 / len(tally.latencies_ms):.1f}",
        "ok" if ok else "MISSED",
    ]


if __name__ == "__main__":
    main()
