"""POPE benchmark: yes/no object questions -> answers -> metrics, with every question's attention stored.

A POPE question file has one JSON object per line:
``{"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a snowboard in the image?",
"label": "yes"}``. Each file is a split (named after the file stem: random, popular, adversarial ...).
Every question becomes one store entry named ``<split>/<question_id>``, with extra per-image variables
(`EXTRAS`, see schema.EXTRA_ATTR) that link it to its image, label and parsed answer, so attention can
be split by correct / incorrect answers with plain xarray.

Metrics follow the POPE paper, "yes" being the positive class. An answer with no yes/no word is
"other": it counts as wrong (accuracy), is not a "yes" prediction (a false negative when the label is
yes), and is counted in `n_other`. A ratio whose denominator is 0 is reported as 0.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from attnstore.errors import AttnstoreError, InvalidArgument
from attnstore.extraction.pipeline import WorkItem
from attnstore.records import Extraction

YES, NO, OTHER = "yes", "no", "other"
ALL = "all"  # the row of the metrics over every split
DEFAULT_TEMPLATE = "{question}"
EXTRAS: dict[str, tuple[str, str]] = {
    "pope_split": ("str", "POPE question file (split) of this entry"),
    "pope_question_id": ("str", "question_id in the POPE question file"),
    "pope_image": ("str", "image file named by the question"),
    "pope_label": ("str", "ground truth: yes / no"),
    "pope_answer": ("str", "the model's answer parsed to yes / no / other"),
    "pope_correct": ("int32", "1 if the parsed answer equals the label, else 0"),
}
_WORDS = re.compile(r"[a-z]+")
REQUIRED_KEYS = ("question_id", "image", "text", "label")


@dataclass(frozen=True)
class Question:
    split: str
    question_id: str
    image: str
    text: str
    label: str  # yes / no

    @property
    def name(self) -> str:
        """The store entry of this question."""
        return f"{self.split}/{self.question_id}"


def read_questions(files: list[Path], limit: int = 0) -> list[Question]:
    """Questions of every file (a split each, named after the file stem); at most `limit` per file (0 = all)."""
    if not files:
        raise InvalidArgument("questions", "is missing: give a POPE question file (.jsonl)")
    splits = [Path(f).stem for f in files]
    if len(set(splits)) < len(splits):
        raise AttnstoreError(f"question files must have different names (they name the splits): {splits}")
    questions: list[Question] = []
    for path, split in zip(files, splits):
        part = _read_file(Path(path), split)
        questions += part[:limit] if limit else part
    return questions


def _read_file(path: Path, split: str) -> list[Question]:
    if not path.is_file():
        raise AttnstoreError(f"question file not found: {path}")
    out, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise AttnstoreError(f"{where}: not a JSON object ({err.msg})") from err
        missing = [k for k in REQUIRED_KEYS if not isinstance(record, dict) or k not in record]
        if missing:
            raise AttnstoreError(f"{where}: missing {', '.join(missing)} (POPE needs {', '.join(REQUIRED_KEYS)})")
        label = str(record["label"]).strip().lower()
        if label not in (YES, NO):
            raise AttnstoreError(f"{where}: label must be yes or no, not {record['label']!r}")
        qid = str(record["question_id"])
        if qid in seen:
            raise AttnstoreError(f"{where}: question_id {qid} appears twice in {path.name}")
        seen.add(qid)
        out.append(Question(split, qid, str(record["image"]), str(record["text"]), label))
    return out


def parse_answer(text: str) -> str:
    """'yes' / 'no' from the first yes-or-no word of `text` (any case or punctuation), else 'other'."""
    for word in _WORDS.findall(str(text).lower()):
        if word in (YES, NO):
            return word
    return OTHER


@dataclass(frozen=True)
class Metrics:
    n: int
    n_other: int
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_ratio: float


def compute_metrics(labels: list[str], answers: list[str]) -> Metrics:
    """POPE metrics of parsed `answers` (yes / no / other) against `labels` (yes / no); "yes" = positive."""
    lab = np.asarray(labels, dtype=object)
    ans = np.asarray(answers, dtype=object)
    tp = int(((ans == YES) & (lab == YES)).sum())
    fp = int(((ans == YES) & (lab == NO)).sum())
    tn = int(((ans == NO) & (lab == NO)).sum())
    fn = int(((ans != YES) & (lab == YES)).sum())  # "no" or "other" on a yes question
    n = int(lab.size)
    ratio = lambda a, b: a / b if b else 0.0  # noqa: E731
    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return Metrics(
        n=n,
        n_other=int((ans == OTHER).sum()),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        accuracy=ratio(tp + tn, n),
        precision=precision,
        recall=recall,
        f1=ratio(2 * precision * recall, precision + recall),
        yes_ratio=ratio(int((ans == YES).sum()), n),
    )


def metrics_by_split(splits: list[str], labels: list[str], answers: list[str]) -> dict[str, Metrics]:
    """Metrics per split (in first-seen order), then over all of them (key ALL)."""
    spl, lab, ans = (np.asarray(v, dtype=object) for v in (splits, labels, answers))
    out = {s: compute_metrics(lab[spl == s], ans[spl == s]) for s in dict.fromkeys(splits)}
    out[ALL] = compute_metrics(lab, ans)
    return out


def question_items(questions: list[Question], image_dir: Path, template: str = DEFAULT_TEMPLATE) -> list[WorkItem]:
    """One extraction entry per question: its image, the prompt from `template`, and the POPE extras."""
    if "{question}" not in template:
        raise InvalidArgument("prompt_template", "must contain {question}")
    return [
        WorkItem(
            name=q.name,
            path=str(Path(image_dir) / q.image),
            prompt=template.replace("{question}", q.text),
            extra={
                "pope_split": q.split,
                "pope_question_id": q.question_id,
                "pope_image": q.image,
                "pope_label": q.label,
            },
        )
        for q in questions
    ]


def annotate(item: WorkItem, result: Extraction) -> dict:
    """The answer-dependent extras of one entry (runs on the worker, before `complete` is written)."""
    parsed = parse_answer(result.answer)
    return {"pope_answer": parsed, "pope_correct": int(parsed == item.extra["pope_label"])}


def results_from_store(ds: xr.Dataset, names: list[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """(splits, labels, parsed answers) of the complete POPE entries of a store (only `names` if given)."""
    missing = [v for v in EXTRAS if v not in ds]
    if missing:
        raise AttnstoreError(f"the store has no POPE variables ({', '.join(missing)}): run `attnstore pope` first")
    keep = ds["complete"].values.astype(bool)
    if names is not None:
        wanted = set(names)
        keep &= np.array([str(n) in wanted for n in ds["image_name"].values], dtype=bool)
    pick = lambda v: [str(x) for x in ds[v].values[keep]]  # noqa: E731
    return pick("pope_split"), pick("pope_label"), pick("pope_answer")


def report_json(metrics: dict[str, Metrics], **context) -> dict:
    """A JSON-serialisable report: `context` (store, model ...) plus metrics per split."""
    return {**context, "metrics": {split: asdict(m) for split, m in metrics.items()}}
