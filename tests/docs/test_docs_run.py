"""What users type, the way they type it: every command and Python block of README.md and docs/*.md
runs in a fresh process against a copy of the demo store, or is marked `# needs: <what>`.

Conventions (docs/architecture.md, "Docs that run"):
- ```python blocks run whole in a fresh interpreter, unless a line says `# needs: ...`.
- ```bash blocks run line by line (backslash continuations joined); a line ending in
  `# needs: ...` is not run (real weights, a cluster, s3, ...). Set-up lines (`make`, `pip`) are
  not run: CI runs the README's two commands itself. `attnstore serve`/`demo` lines are started, must answer
  HTTP, and are stopped; `curl` lines go to a server the test starts on the same store.
- Store and image names used in the docs (my.zarr, attention.zarr, photo1.jpg, val2014/, ...)
  exist in the working folder: copies of the demo store and of the sample images.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.M | re.S)
NEEDS = re.compile(r"#\s*needs:", re.I)
RUNNABLE = ("attnstore ", "python ", "curl ", ".venv/bin/")
STORE_NAMES = ("my.zarr", "attention.zarr", "coco.zarr", "store.zarr", "demo_store.zarr", "demo.zarr")
IMAGE_NAMES = ("photo1.jpg", "photo2.png", "photo.jpg")
IMAGE_DIRS = ("val2014", "imgs", "../COCO/val2014")
TIMEOUT = 300

pytestmark = pytest.mark.slow


def fenced(lang: str) -> list[tuple[str, int, str]]:
    """(file, line, text) of every fenced block of `lang` in the docs."""
    found = []
    for path in DOC_FILES:
        text = path.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) == lang:
                found.append((path.name, text[: match.start()].count("\n") + 1, match.group(2)))
    return found


def command_lines(block: str) -> list[str]:
    """The block's commands: continuations joined, blank and comment-only lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def without_comment(line: str) -> str:
    return re.sub(r"\s+#.*$", "", line)


BASH = [(f"{name}:{line}", cmd) for name, line, block in fenced("bash") for cmd in command_lines(block)]
PYTHON = [(f"{name}:{line}", block) for name, line, block in fenced("python")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model_path):
    """A folder with every store and image name the docs use: copies of the store `attnstore demo` builds."""
    from attnstore.extraction.demo import build_demo_store
    from attnstore.inputs.images import sample_images

    demo_store = str(tmp_path_factory.mktemp("docs") / "demo.zarr")
    build_demo_store(demo_store, show_progress=False)
    root = tmp_path_factory.mktemp("docs") / "work"
    root.mkdir()
    for name in STORE_NAMES:
        shutil.copytree(demo_store, root / name)
    samples = sample_images()
    for name, source in zip(IMAGE_NAMES, samples * 2):
        shutil.copy(source, root / name)
    for folder in IMAGE_DIRS:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for source in samples[:2]:
            shutil.copy(source, root / folder / Path(source).name)
    return root


def environment() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("PYTHONPATH", None) if env.get("PYTHONPATH") == "" else None
    return env


def run(cmd: str, cwd: Path, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, env=environment(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def wait_for_http(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port} after {timeout} s")


def serve(cmd: str, cwd: Path) -> tuple[subprocess.Popen, int]:
    """Start a serving command on a free port."""
    port = free_port()
    cmd = re.sub(r"--port\s+\d+", "", cmd) + f" --port {port}"
    proc = subprocess.Popen(["bash", "-c", f"exec {cmd}"], cwd=cwd, env=environment(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for_http(port, proc)
    return proc, port


@pytest.fixture(scope="module")
def api_server(workdir):
    proc, port = serve("attnstore serve attention.zarr", workdir)
    yield port
    proc.terminate()
    proc.wait(timeout=30)


def test_every_command_runs_or_is_marked():
    unmarked = [
        f"{where}: {cmd}"
        for where, cmd in BASH
        if not NEEDS.search(cmd) and not cmd.startswith(("make ", "pip ", *RUNNABLE))
    ]
    assert not unmarked, "commands that are neither runnable here nor marked '# needs: ...':\n" + "\n".join(unmarked)


@pytest.mark.parametrize("where,cmd", [c for c in BASH if not NEEDS.search(c[1]) and c[1].startswith(RUNNABLE)])
def test_doc_command_runs(where, cmd, workdir, api_server):
    cmd = without_comment(cmd)
    if re.match(r"attnstore (serve|demo)(\s|$)", cmd) and "--no-serve" not in cmd:
        proc, _ = serve(cmd, workdir)
        proc.terminate()
        proc.wait(timeout=30)
        return
    cmd = re.sub(r"(localhost|127\.0\.0\.1):5001", f"127.0.0.1:{api_server}", cmd)
    cmd = re.sub(r"^curl ", "curl --fail ", cmd)  # an HTTP error must fail the line, not write an error body
    proc = run(cmd, workdir)
    assert proc.returncode == 0, f"{where}: `{cmd}` failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, f"{where}: `{cmd}` printed a traceback:\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize("where,block", [b for b in PYTHON if not NEEDS.search(b[1])])
def test_doc_python_block_runs_in_a_fresh_interpreter(where, block, workdir):
    proc = subprocess.run([sys.executable, "-c", block], cwd=workdir, env=environment(), capture_output=True,
                          text=True, timeout=TIMEOUT)  # fmt: skip
    assert proc.returncode == 0, f"{where}: the Python block failed:\n{proc.stderr[-3000:]}"
