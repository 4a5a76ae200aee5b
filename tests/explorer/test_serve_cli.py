"""`attnstore serve`: serves a store, and bad input ends in one clear line (exit 1)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from attnstore.cli import main


def test_serve_missing_store_is_one_line(tmp_path, capsys):
    code = main(["serve", str(tmp_path / "none.zarr"), "--port", str(_free_port())])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "no attnstore store" in err and "Traceback" not in err


def test_serve_busy_port_is_one_line(synthetic_store, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code = main(["serve", synthetic_store, "--port", str(busy.getsockname()[1])])
    err = capsys.readouterr().err
    assert code == 1 and "cannot listen on 127.0.0.1" in err and "pass another --port" in err


def test_missing_store_is_named_before_a_busy_port(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code = main(["serve", str(tmp_path / "nope.zarr"), "--port", str(busy.getsockname()[1])])
    err = capsys.readouterr().err
    assert code == 1 and "no attnstore store" in err and "cannot listen" not in err, err


def test_demo_with_a_busy_port_fails_before_building(tmp_path, capsys):
    out = tmp_path / "demo.zarr"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code = main(["demo", "--out", str(out), "--port", str(busy.getsockname()[1])])
    assert code == 1 and "cannot listen on 127.0.0.1" in capsys.readouterr().err
    assert not out.exists()


def test_serve_bad_port(synthetic_store, capsys):
    assert main(["serve", synthetic_store, "--port", "70000"]) == 1
    assert "--port must be between 1 and 65535" in capsys.readouterr().err


@pytest.mark.slow
def test_serve_serves_the_store(synthetic_store):
    port = _free_port()
    cli = [sys.executable, "-c", "from attnstore.cli import run; run()", "serve", synthetic_store, "--port", str(port)]
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        body = _wait_json(f"http://127.0.0.1:{port}/api/initialize", proc)
        assert body["success"] and body["num_heads"] == 4
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
        assert "attnstore explorer" in page
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert f"http://127.0.0.1:{port}/" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_json(url: str, proc: subprocess.Popen) -> dict:
    import json

    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
        try:
            return json.loads(urllib.request.urlopen(url, timeout=5).read())
        except OSError:
            time.sleep(0.2)
    raise AssertionError("server did not answer in 30 s")


def test_a_wildcard_host_needs_allow_host(synthetic_store, capsys):
    """0.0.0.0 has no one name clients use: the Host allow-list must be given (one line)."""
    assert main(["serve", synthetic_store, "--host", "0.0.0.0", "--port", str(_free_port())]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--allow-host is needed with --host 0.0.0.0" in err


def test_allowed_hosts_by_bind_address():
    from attnstore.cli.serve import allowed_hosts

    assert allowed_hosts("127.0.0.1", ()) == ()
    assert allowed_hosts("192.168.1.5", ("box.lan",)) == ("box.lan", "192.168.1.5")  # the bound address itself
    assert allowed_hosts("0.0.0.0", ("box.lan",)) == ("box.lan",)


def test_demo_on_a_wildcard_host_without_allow_host_fails_before_building(tmp_path, capsys):
    out = tmp_path / "demo.zarr"
    assert main(["demo", "--out", str(out), "--host", "0.0.0.0", "--port", str(_free_port())]) == 1
    err = capsys.readouterr().err
    assert "--allow-host is needed" in err and err.count("\n") == 1, err
    assert not out.exists()
