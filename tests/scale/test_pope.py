"""POPE: answer parsing, metrics against hand-computed numbers, question files, and the stored run."""

import json

import pytest

from attnstore.cli import main
from attnstore.errors import AttnstoreError
from attnstore.extraction.pope import (
    ALL,
    EXTRAS,
    compute_metrics,
    metrics_by_split,
    parse_answer,
    read_questions,
    results_from_store,
)
from attnstore.extraction.synthetic import _gradient_image
from attnstore.store import open_dataset


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("Yes", "yes"),
        ("yes.", "yes"),
        ("NO!", "no"),
        ("No, there is no dog.", "no"),
        ("  Yes, there is a snowboard", "yes"),
        ("There is no snowboard.", "no"),  # the first yes/no word decides
        ("I think yes; no wait", "yes"),
        ("Nothing like that", "other"),  # 'no' only as a whole word
        ("Yesterday", "other"),
        ("", "other"),
        ("The image shows a beach", "other"),
    ],
)
def test_parse_answer(text, parsed):
    assert parse_answer(text) == parsed


def test_metrics_match_hand_computed_numbers():
    # 10 questions: 6 labelled yes, 4 no. Predictions: yes-questions -> 4 yes, 1 no, 1 other;
    # no-questions -> 1 yes, 3 no.  TP=4 FN=2 (no + other) FP=1 TN=3.
    labels = ["yes"] * 6 + ["no"] * 4
    answers = ["yes", "yes", "yes", "yes", "no", "other", "yes", "no", "no", "no"]
    m = compute_metrics(labels, answers)
    assert (m.n, m.tp, m.fp, m.tn, m.fn, m.n_other) == (10, 4, 1, 3, 2, 1)
    assert m.accuracy == pytest.approx(7 / 10)
    assert m.precision == pytest.approx(4 / 5)
    assert m.recall == pytest.approx(4 / 6)
    assert m.f1 == pytest.approx(2 * (4 / 5) * (4 / 6) / (4 / 5 + 4 / 6))  # 0.72727...
    assert m.f1 == pytest.approx(8 / 11)
    assert m.yes_ratio == pytest.approx(5 / 10)


def test_metrics_per_split_and_degenerate_cases():
    splits = ["random", "random", "adversarial", "adversarial"]
    labels = ["yes", "no", "yes", "no"]
    answers = ["yes", "no", "yes", "yes"]
    out = metrics_by_split(splits, labels, answers)
    assert list(out) == ["random", "adversarial", ALL]
    assert out["random"].accuracy == 1.0 and out["random"].f1 == 1.0
    assert out["adversarial"].precision == 0.5 and out["adversarial"].yes_ratio == 1.0
    assert out[ALL].accuracy == 0.75 and out[ALL].precision == pytest.approx(2 / 3)
    none = compute_metrics(["no", "no"], ["other", "other"])  # no yes predicted, no yes label: 0, not NaN
    assert (none.precision, none.recall, none.f1, none.accuracy, none.n_other) == (0.0, 0.0, 0.0, 0.0, 2)


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def q(qid, image, label, text="Is there a dog in the image?"):
    return {"question_id": qid, "image": image, "text": text, "label": label}


def test_read_questions_names_splits_and_limits(tmp_path):
    a = write_jsonl(tmp_path / "coco_pope_random.jsonl", [q(1, "a.png", "yes"), q(2, "b.png", "No ")])
    b = write_jsonl(tmp_path / "coco_pope_adversarial.jsonl", [q(1, "a.png", "no"), q(7, "c.png", "yes")])
    questions = read_questions([a, b], limit=1)
    assert [x.name for x in questions] == ["coco_pope_random/1", "coco_pope_adversarial/1"]
    assert [x.label for x in read_questions([a])] == ["yes", "no"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"question_id": 1, "image": "a.png", "text": "?"}\n', "missing label"),
        ('{"question_id": 1, "image": "a.png", "text": "?", "label": "maybe"}\n', "label must be yes or no"),
        ("not json\n", "not a JSON object"),
        (json.dumps(q(1, "a", "yes")) + "\n" + json.dumps(q(1, "b", "no")) + "\n", "appears twice"),
    ],
)
def test_bad_question_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "split.jsonl"
    path.write_text(content)
    with pytest.raises(AttnstoreError, match=message):
        read_questions([path])


def test_pope_run_stores_every_question_with_its_label_and_answer(tmp_path, tiny_model_path, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    for i, size in enumerate([(400, 100), (300, 120)]):
        _gradient_image(*size, seed=i).save(images / f"im{i}.png")
    rnd = write_jsonl(tmp_path / "random.jsonl", [q(1, "im0.png", "yes"), q(2, "im1.png", "no"), q(3, "x.png", "no")])
    adv = write_jsonl(tmp_path / "adversarial.jsonl", [q(10, "im0.png", "no", "Is there a cat?")])
    out, report = str(tmp_path / "pope.zarr"), tmp_path / "report.json"
    args = ["pope", "--questions", str(rnd), "--question-file", str(adv), "--image-dir", str(images)]
    args += ["--model-id", str(tiny_model_path), "--out", out, "--report", str(report)]
    assert main([*args, "--max-new-tokens", "3", "--no-progress"]) == 1  # x.png is missing: reported, exit 1
    captured = capsys.readouterr()
    assert "random/3" in captured.err and "image not found" in captured.err
    assert "POPE" in captured.out and "adversarial" in captured.out
    ds = open_dataset(out)
    names = [str(n) for n in ds.image_name.values]
    assert names == ["random/1", "random/2", "adversarial/10"] and ds.complete.values.all()
    for var in EXTRAS:
        assert ds[var].dims == ("image",)
    assert [str(v) for v in ds.pope_label.values] == ["yes", "no", "no"]
    assert [str(v) for v in ds.pope_image.values] == ["im0.png", "im1.png", "im0.png"]
    parsed = [parse_answer(str(a)) for a in ds.answer.values]
    assert [str(v) for v in ds.pope_answer.values] == parsed
    assert ds.pope_correct.values.tolist() == [int(p == lab) for p, lab in zip(parsed, ["yes", "no", "no"])]
    assert str(ds.prompt.values[2]) == "Is there a cat?"
    saved = json.loads(report.read_text())
    expected = metrics_by_split(*results_from_store(ds))
    assert saved["metrics"]["all"]["n"] == 3 and saved["metrics"]["random"]["n"] == 2
    assert saved["metrics"]["all"]["accuracy"] == pytest.approx(expected[ALL].accuracy)
    assert main(["validate", out]) == 0
    # attention split by correctness is plain xarray
    assert ds.attention.where(ds.pope_correct == 1, drop=True).sizes["image"] == int(ds.pope_correct.sum())
