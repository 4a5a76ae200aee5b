"""Answers judged against the store's expected answers: in the explorer (the status line next to
the answer, the picker's cards, the first view opens on a right answer), in `attnstore info`
(accuracy; the completeness column is named `complete`) and as `ds.attn.answer_correct()`."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from attnstore.analysis.correctness import answer_correct, is_right, normalise_answer
from attnstore.cli import main
from explorer import views
from explorer.panels import heatmap, picker
from explorer.state import StoreState


def judged(scene_store, answers: dict[int, tuple[str, str]]) -> xr.Dataset:
    """The scene store in memory with image i's (answer, expected answer) replaced."""
    from attnstore.store import open_dataset

    ds = open_dataset(scene_store).load()
    answer = np.array([str(a) for a in ds["answer"].values], dtype=object)
    expected = np.array([str(e) for e in ds["expected_answer"].values], dtype=object)
    for i, (got, want) in answers.items():
        answer[i], expected[i] = got, want
    return ds.assign(answer=("image", answer), expected_answer=("image", expected))


def text_of(component) -> str:
    """All text inside a Dash component tree."""
    if isinstance(component, str):
        return component
    if isinstance(component, list | tuple):
        return "".join(text_of(c) for c in component)
    children = getattr(component, "children", None)
    return "" if children is None else text_of(children)


@pytest.mark.parametrize(
    ("answer", "expected", "verdict"),
    [
        ("red", "red", 1),
        (" Red.<end_of_utterance>", "red", 1),
        ("red, I think", "red", 1),
        ("green", "red", 0),
        ("reddish", "red", 0),  # a prefix of a word is not the word
        ("", "red", 0),
        ("red", "", -1),  # no expected answer: unknown
    ],
)
def test_an_answer_is_right_when_it_is_the_expected_words(answer, expected, verdict):
    assert is_right(answer, expected) == verdict


def test_normalised_answers_drop_specials_case_and_end_punctuation():
    assert normalise_answer("  The  Purple <end_of_utterance> ") == "the purple"


def test_accessor_gives_a_per_image_variable_that_joins(scene_store):
    ds = judged(scene_store, {0: ("green", "red"), 1: ("blue", "blue")})
    correct = ds.attn.answer_correct()
    assert correct.name == "answer_correct" and correct.dims == ("image",)
    assert correct.values[:2].tolist() == [0, 1]
    joined = ds.assign(answer_correct=correct)  # a variable analyses can group by
    assert joined["answer_correct"].sel(image=1).item() == 1
    # An incomplete image is unknown, whatever its strings say.
    ds2 = ds.assign(complete=("image", np.array([False, True, True])))
    assert answer_correct(ds2).values[0] == -1


def test_visual_ratio_ranks_heads_by_right_and_wrong(scene_store):
    ds = judged(scene_store, {0: ("green", "red"), 1: ("blue", "blue"), 2: ("cross", "cross")})
    out = ds.attn.visual_ratio(label="answer_correct", bootstrap=0)
    assert "auroc" in out and out.attrs["positive"] == "answer_correct == 1"
    by_image = dict(zip(out["image"].values.tolist(), out["row_label"].values.tolist()))
    assert by_image == {0: 0, 1: 1, 2: 1}
    auto = ds.attn.visual_ratio(bootstrap=0)  # a store with expected answers: right / wrong by default
    assert "auroc" in auto and auto.attrs["positive"] == "answer_correct == 1"


def test_explorer_marks_answers_right_or_wrong_and_opens_on_a_right_one(scene_store):
    state = StoreState(judged(scene_store, {0: ("green", "red"), 1: ("blue", "blue"), 2: ("cross", "circle")}))
    assert state.first_image() == 1  # not image 0: its answer is wrong
    assert views.default_params(state).image == 1
    wrong, right = views.verdict(state, 0), views.verdict(state, 1)
    assert (wrong.css, right.css) == ("wrong", "right")
    assert "expected red" in wrong.text and "right" in right.text
    params = views.default_params(state)
    line = text_of(heatmap.status(state, params, views.heatmap(state, params)))
    assert "answer “blue” ✓ right" in line
    card = picker.card(_FakeApp(), 0, state.catalog(), False, wrong)
    assert "wrong" in card.className and "expected red" in text_of(card)


def test_a_store_without_expected_answers_marks_nothing(synthetic_store):
    state = StoreState(synthetic_store)
    assert not state.judges_answers and state.first_image() == 0
    assert views.verdict(state, 0).css == ""
    params = views.default_params(state)
    assert "right" not in text_of(heatmap.status(state, params, None))


def test_info_shows_accuracy_and_a_complete_column(scene_store, synthetic_store, capsys):
    assert main(["info", scene_store]) == 0
    out = capsys.readouterr().out
    assert "answers: 0 of 3 right (0%)" in out  # the random-weight model's answers
    assert "expected" in out and "wrong" in out and "complete" in out and " ok " not in out
    assert main(["info", synthetic_store]) == 0
    out = capsys.readouterr().out
    assert "right" not in out and "complete" in out


class _FakeApp:
    def get_relative_path(self, path: str) -> str:
        return path
