"""The one progress bar: shown on a terminal when there is work, never a stray line or a `0/0` bar."""

from attnstore.cli import main
from attnstore.progress import progress_bar


def test_bar_shows_only_on_a_terminal_with_work(monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats the console as a terminal
    assert not progress_bar(5).disable
    assert progress_bar(0).disable  # a rerun with nothing to do: no `0/0 ETA -:--:--`
    assert progress_bar(5, show=False).disable
    monkeypatch.delenv("FORCE_COLOR")
    assert progress_bar(5).disable  # a pipe or a log file: no bar, no trailing newline


def test_a_failing_aggregate_prints_its_error_alone(synthetic_store, tmp_path, capsys):
    """With the bar on (the default), the error is still the first and only line of stderr."""
    assert main(["aggregate", synthetic_store, "--token", "zebra", "--out", str(tmp_path / "a.csv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: token 'zebra'") and err.count("\n") == 1, repr(err)
