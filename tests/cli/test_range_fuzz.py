"""Property tests of the --layers / --heads range parsers: any text is a correct selection or one clear error.

The reference below is the grammar the help documents ("0-29", "3", "0,3,5-7", "all"): comma-separated
ASCII numbers or lo-hi ranges, optional spaces and tabs around them, every index inside 0..n-1.
"""

from __future__ import annotations

import json
import re
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from attnstore.analysis import parse_range
from attnstore.cli import main
from attnstore.errors import InvalidArgument

PART = re.compile(r"[ \t]*([0-9]+)[ \t]*(?:-[ \t]*([0-9]+)[ \t]*)?")
REFUSED = "refused"


def reference(spec: str, n: int) -> list[int] | None | str:
    """What the documented grammar selects: None for all, a sorted list, or REFUSED."""
    if spec.strip(" \t").lower() in ("", "all"):
        return None
    picked: set[int] = set()
    for part in spec.split(","):
        match = PART.fullmatch(part)
        if not match:
            return REFUSED
        lo, hi = (number(match[1]), number(match[2] or match[1]))
        if not 0 <= lo <= hi < n:
            return REFUSED
        picked.update(range(lo, hi + 1))
    return sorted(picked)


def number(digits: str) -> float:
    """Python reads at most 4300 digits; anything that long is beyond every index anyway."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) < 4000 else float("inf")


def parsed(spec: str, n: int) -> list[int] | None | str:
    try:
        return parse_range(spec, n, "layers")
    except InvalidArgument as err:
        assert err.param == "layers"
        assert "\n" not in str(err) and len(str(err)) < 200, str(err)
        return REFUSED


NEAR_MISS = "0123456789-, \t\n_+.eE٣３²allALL\u200b\u2028\x00"  # digits, separators and look-alikes
numbers = st.integers(min_value=-(10**30), max_value=10**30).map(str) | st.sampled_from(["9" * 5000, "-0", "00"])
specs = (
    st.text()
    | st.text(alphabet=NEAR_MISS, max_size=20)
    | st.lists(numbers | st.tuples(numbers, numbers).map("-".join), min_size=1, max_size=5).map(",".join)
    | st.lists(st.text(alphabet="0123456789", min_size=1, max_size=3), min_size=1, max_size=4).map("-".join)
)


@settings(max_examples=800, deadline=None)
@given(spec=specs, n=st.integers(min_value=1, max_value=40))
@example(spec="1_0", n=40)  # int() reads 10
@example(spec="٣", n=8)  # int() reads Arabic-Indic 3
@example(spec="+3", n=8)
@example(spec="5-3", n=8)  # a reversed range selects nothing: refused, not silently dropped
@example(spec="0,5-3", n=8)
@example(spec="0-99999999999999999999", n=30)
@example(spec="9" * 5000, n=30)
def test_parser_matches_the_documented_grammar(spec, n):
    assert parsed(spec, n) == reference(spec, n)


@st.composite
def range_lists(draw) -> tuple[int, list[tuple[int, int]]]:
    """(n, [(lo, hi), ...]) with every range inside 0..n-1."""
    n = draw(st.integers(min_value=1, max_value=60))
    bound = st.integers(0, n - 1)
    pairs = draw(st.lists(st.tuples(bound, bound), min_size=1, max_size=6))
    return n, [(min(a, b), max(a, b)) for a, b in pairs]


@settings(max_examples=300, deadline=None)
@given(case=range_lists(), spaces=st.sampled_from(["", " ", "  ", "\t"]))
def test_valid_lists_select_exactly_their_union(case, spaces):
    n, ranges = case
    text = ",".join(f"{spaces}{lo}{spaces}-{spaces}{hi}{spaces}" if lo != hi else f"{lo}{spaces}" for lo, hi in ranges)
    expected = sorted({i for lo, hi in ranges for i in range(lo, hi + 1)})
    assert parse_range(text, n, "heads") == expected


# -- the CLI: one line and exit 1 for every refused spec, the exact selection otherwise --------------------


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(args)  # an unexpected exception would escape here and fail the test with its traceback
    return code, out.getvalue(), err.getvalue()


valid_small = st.sampled_from(["0", "1", "3", "0-1", "1-3", "0,2", " 1 ", "all", "ALL", "", "0-0,1"])
cli_specs = (valid_small | specs).filter(lambda s: "\x00" not in s)  # argv cannot hold NUL


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layers=cli_specs, heads=cli_specs)
@example(layers="1\n2", heads="0")  # a newline in the value must not split the error line
@example(layers="\udcff", heads="0")  # undecodable argv bytes arrive as lone surrogates
@example(layers="0-1", heads="3-0")
def test_cli_selects_exactly_or_fails_in_one_line(synthetic_store, tmp_path, layers, heads):
    n_layers, n_heads = 2, 4  # the synthetic store
    want = {"layers": reference(layers, n_layers), "heads": reference(heads, n_heads)}
    out_json = tmp_path / "map.json"
    out_json.unlink(missing_ok=True)
    args = ["heatmap", synthetic_store, "--token", "jacket", f"--layers={layers}", f"--heads={heads}",  # "=": "-3" too
            "--output", str(tmp_path / "map.png"), "--json", str(out_json)]  # fmt: skip
    code, stdout, stderr = run_cli(args)
    if REFUSED in want.values():
        lines = stderr.splitlines()
        assert code == 1 and len(lines) == 1, stderr
        flag = "--layers" if want["layers"] == REFUSED else "--heads"
        assert lines[0].startswith(f"error: {flag} "), lines[0]
        assert not out_json.exists()
    else:
        assert code == 0, stderr
        spec = json.loads(Path(out_json).read_text())["spec"]
        assert spec["layers"] == want["layers"] and spec["heads"] == want["heads"]


@pytest.mark.parametrize("flag", ["--layers", "--heads"])
def test_aggregate_refuses_in_one_line(synthetic_store, tmp_path, flag):
    code, _, stderr = run_cli(["aggregate", synthetic_store, "--token", "jacket", "--out", str(tmp_path / "a.csv"),
                               flag, "1_0", "--no-progress"])  # fmt: skip
    assert code == 1 and stderr.count("\n") == 1 and stderr.startswith(f"error: {flag} '1_0'"), stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("spec, named", [("3-1", "'3-1' is reversed: write it low-high (1-3)"),
                                          ("0, 5-3", "'5-3' is reversed: write it low-high (3-5)")])  # fmt: skip
def test_a_reversed_range_is_named_as_reversed(spec, named):
    with pytest.raises(InvalidArgument) as err:
        parse_range(spec, 8, "layers")
    assert named in str(err.value) and "outside" not in str(err.value)
