"""`attnstore serve` in both modes (one process; `--workers 2`) under stalled clients: 200 connections
that send part of a request and hold it must not stop a normal client's request, and a body declared
too large is refused without being sent. (1,000 and the latencies: benchmarks/bench_load.py --slow.)"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from support.servers import free_port

SLOW = 200


def _start(store: str, port: int, workers: int) -> subprocess.Popen:
    cli = [sys.executable, "-c", "from attnstore.cli import run; run()", "serve", store, "--port", str(port)]
    proc = subprocess.Popen(
        cli + ["--workers", str(workers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/initialize", timeout=5).read()
            return proc
        except OSError:
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
            time.sleep(0.3)


def _stalled(port: int, n: int) -> list[socket.socket]:
    """n connections, each with a request's headers and the first byte of its body, then nothing."""
    request = b"POST /_dash-update-component HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(request + b"Content-Length: 1000\r\n\r\n{")
        socks.append(sock)
    return socks


def _declared_too_large(port: int) -> bytes:
    """A POST declaring 1.5 GB, of which nothing is sent: the answer must come anyway."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /_dash-update-component HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1500000000\r\n\r\n")
        return sock.recv(200)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_stalled_clients_do_not_stop_a_normal_one(synthetic_store, workers):
    port = free_port()
    proc = _start(synthetic_store, port, workers)
    socks = []
    try:
        socks = _stalled(port, SLOW)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/initialize", timeout=15) as response:
            assert response.status == 200 and json.loads(response.read())["success"]
        assert _declared_too_large(port).startswith(b"HTTP/1.1 413")
    finally:
        for sock in socks:
            sock.close()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in out
    assert "Traceback" not in err
