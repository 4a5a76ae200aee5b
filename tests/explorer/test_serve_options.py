"""`attnstore serve --workers N` (gunicorn) and `--seed-frontend DIR`: one-line errors, and a
real multi-process server on 127.0.0.1 that stops cleanly on Ctrl+C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support.servers import free_port

from attnstore.cli import main

CLIENT = Path(__file__).parent / "seed_client"


def test_bad_seed_folder_is_one_line(synthetic_store, tmp_path, capsys):
    assert main(["serve", synthetic_store, "--seed-frontend", str(tmp_path), "--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --seed-frontend ") and "templates/index.html" in err


@pytest.mark.parametrize("workers", ["-1", "65"])
def test_bad_workers_is_one_line(synthetic_store, capsys, workers):
    assert main(["serve", synthetic_store, "--workers", workers]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--workers must be between 0 and 64" in err


def test_workers_on_a_missing_store_is_one_line(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "none.zarr"), "--workers", "2", "--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no attnstore store" in err


def _listening(port: int) -> list[str]:
    """Local addresses listening on `port` (from /proc/net/tcp: hex IPv4 + port, state 0A = LISTEN)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":
            found.append(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def _children(pid: int) -> list[int]:
    kids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            kids.append(int(status.parent.name))
    return kids


@pytest.mark.slow
def test_workers_serve_the_seed_frontend_and_stop_on_ctrl_c(synthetic_store):
    port = free_port()
    cli = [sys.executable, "-c", "from attnstore.cli import run; run()", "serve", synthetic_store]
    cli += ["--port", str(port), "--workers", "2", "--seed-frontend", str(CLIENT)]
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/initialize", timeout=5).read())
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
                time.sleep(0.3)
        assert body["success"] and body["tokens"][0].keys() == {"text", "index", "is_selectable"}
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
        assert "/static/js/client.js" in page
        assert _listening(port) == ["127.0.0.1"]  # loopback only by default
        assert len(_children(proc.pid)) == 2  # gunicorn's two worker processes
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in out and "2 worker processes" in out
    assert err == ""  # no banner, no request log, no traceback


def test_workers_without_gunicorn_is_one_line(synthetic_store, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gunicorn.app.base", None)  # as if gunicorn were not installed
    assert main(["serve", synthetic_store, "--workers", "2", "--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--workers needs gunicorn" in err and "attnstore[server]" in err
