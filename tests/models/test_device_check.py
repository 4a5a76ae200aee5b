"""benchmarks/device_check.py runs here on the CPU as its own smoke test, over every registered family."""

import importlib.util
import sys
from pathlib import Path

import pytest

from attnstore.models import FAMILIES, tiny_builder

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "device_check.py"


@pytest.fixture(scope="module")
def device_check():
    """The script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.mark.slow
def test_device_check_runs_every_family_on_cpu(device_check, attnstore_cache, capsys):
    args = ["--device", "cpu", "--dims", "tiny", "--new-tokens", "2", "--variants", "sdpa:float32,eager:bfloat16"]
    assert device_check.main([*args, "--image-size", "200x120"]) == 0, capsys.readouterr().out
    table = capsys.readouterr().out.splitlines()
    families = [f for f in FAMILIES if tiny_builder(f) is not None]
    for family in families:  # one row per variant, each checked (fp32 rows within 2e-3, answer = generate)
        rows = [line.split() for line in table if line.startswith(family + " ")]
        assert [(r[1], r[2], r[-1]) for r in rows] == [("sdpa", "float32", "ok"), ("eager", "bfloat16", "ok")]
    assert f"{len(families)} families" in table[-1]


def test_device_check_says_in_one_line_when_the_gpu_is_missing(device_check, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert device_check.main(["--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA GPU" in err
