"""Capture inside generate: stored rows equal transformers' own eager output_attentions (fp16 rounding),
for every family, kernel and batch size; the answer is plain greedy generate's."""

import tempfile
from pathlib import Path

import numpy as np
import pytest

from attnstore.errors import InvalidArgument
from attnstore.extraction.extract import extract, extract_batch, query_positions
from attnstore.extraction.synthetic import _gradient_image
from attnstore.models import FAMILIES as REGISTERED
from attnstore.models import capture, load_adapter, tiny_builder
from attnstore.models.base import resolve_device, resolve_dtype
from attnstore.schema import IMAGE_PATCH_KINDS, TEXT_KINDS, TokenKind, kind_mask
from attnstore.store.validation import bidirectional_keys

FAMILIES = tuple(f for f in REGISTERED if tiny_builder(f) is not None)  # every family with a tiny model
KERNELS = ("sdpa", "eager")
# Different sizes (Idefics3: different tile counts in one batch) and prompt lengths (left padding).
IMAGES = [(640, 480), (300, 700), (1200, 300)]
PROMPTS = ["Can you describe this image?", "What?", "Is there a dog on the left side of the picture, near the tree?"]
NEW_TOKENS = 5
ATOL = 2e-3  # fp16 rounding of values in [0, 1]


@pytest.fixture(scope="module")
def runs(family_adapter):
    """Batch-of-3 and one-by-one results, per (family, kernel)."""
    cache = {}

    def get(family: str, kernel: str, batch_size: int):
        key = (family, kernel, batch_size)
        if key not in cache:
            adapter = family_adapter(family, kernel)
            images = [_gradient_image(w, h, seed=i) for i, (w, h) in enumerate(IMAGES)]
            if batch_size == 1:
                results = [extract(adapter, im, p, max_new_tokens=NEW_TOKENS) for im, p in zip(images, PROMPTS)]
            else:
                results = extract_batch(adapter, images, PROMPTS, max_new_tokens=NEW_TOKENS)
            cache[key] = (adapter, images, results)
        return cache[key]

    return get


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("family", FAMILIES)
def test_rows_equal_eager_output_attentions(runs, transformers_reference, family, kernel, batch_size):
    adapter, images, results = runs(family, kernel, batch_size)
    for image, prompt, result in zip(images, PROMPTS, results):
        reference = transformers_reference.attention(adapter, image, prompt, result.token_id)
        assert result.attention.dtype == np.float16
        assert result.attention.shape == (adapter.n_layers, adapter.n_heads, result.n_query, result.n_key)
        expected = reference[:, :, result.query_position]
        np.testing.assert_allclose(result.attention.astype(np.float32), expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("family", FAMILIES)
def test_rows_sum_to_one_are_causal_and_cover_the_answer(runs, family, batch_size):
    adapter, _, results = runs(family, "sdpa", batch_size)
    mask = getattr(adapter, "attention_mask", "causal")  # PaliGemma's prefix, Gemma 3's views see later keys
    for result in results:
        rows = result.attention.astype(np.float32)
        np.testing.assert_allclose(rows.sum(-1), 1.0, atol=5e-3)
        kinds = result.layout.kind
        after = np.arange(result.n_key)[None, :] > result.query_position[:, None]  # [query, key]
        declared = after & bidirectional_keys(kinds, mask)[result.query_position]  # [query, key]
        assert rows[:, :, after & ~declared].max() == 0  # causal everywhere the family declares no bidirectional part
        if declared.any():  # the declared part is real: those queries do see later keys
            assert rows[:, :, declared].max() > 0
        assert np.array_equal(result.query_position, np.flatnonzero(kind_mask(kinds, TEXT_KINDS)))
        n_generated = int((kinds == TokenKind.GENERATED).sum())
        assert 1 <= n_generated <= NEW_TOKENS and (kinds[-n_generated:] == TokenKind.GENERATED).all()
        assert result.query_position[-1] == result.n_key - 1  # the last answer token's row is there too
        # Every row after the image block gives its patches some attention (the rows reach the image),
        # in every layer that sees all earlier keys (Gemma 3's sliding layer does not).
        image = kind_mask(kinds, IMAGE_PATCH_KINDS)
        later = result.query_position > np.flatnonzero(image)[-1]
        types = getattr(adapter.text_config, "layer_types", None) or ["full_attention"] * adapter.n_layers
        full = [i for i, t in enumerate(types) if t != "sliding_attention"]
        assert later.sum() >= n_generated and rows[full][:, :, later][..., image].sum(-1).min() > 0


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("family", FAMILIES)
def test_answer_is_plain_greedy_generate(runs, transformers_reference, family, batch_size):
    adapter, images, results = runs(family, "sdpa", batch_size)
    for image, prompt, result in zip(images, PROMPTS, results):
        plain = transformers_reference.generate(adapter, image, prompt, NEW_TOKENS)
        generated = result.token_id[result.layout.kind == TokenKind.GENERATED]
        assert generated.tolist() == plain.tolist()
        assert not set(generated.tolist()) & set(adapter.banned_token_ids())
        assert result.answer == adapter.decode(plain)


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_equals_batch_of_one(runs, family):
    _, _, single = runs(family, "sdpa", 1)
    _, _, batched = runs(family, "sdpa", 3)
    for one, many in zip(single, batched):
        assert np.array_equal(one.token_id, many.token_id) and np.array_equal(one.query_position, many.query_position)
        np.testing.assert_array_equal(one.layout.patch_box, many.layout.patch_box)
        np.testing.assert_allclose(many.attention.astype(np.float32), one.attention.astype(np.float32), atol=ATOL)


def test_queries_all_chunked_equals_reference(tiny_adapter, transformers_reference, monkeypatch):
    """Every row kept, computed a few rows at a time (bounded memory), still transformers' values."""
    monkeypatch.setattr(capture, "CHUNK_BYTES", 4 * tiny_adapter.n_heads * 600 * 7)  # ~7 rows per chunk
    image = _gradient_image(300, 200)
    result = extract(tiny_adapter, image, "Describe.", max_new_tokens=2, queries="all")
    assert result.n_query == result.n_key
    reference = transformers_reference.attention(tiny_adapter, image, "Describe.", result.token_id)
    np.testing.assert_allclose(result.attention.astype(np.float32), reference, rtol=0, atol=ATOL)


def test_rows_are_fp32_whatever_the_weights(tiny_model_path):
    """bfloat16 weights: rows still sum to 1 at fp16 precision (they are computed in fp32)."""
    adapter = load_adapter(str(tiny_model_path), dtype="bfloat16")
    assert adapter.model.dtype.is_floating_point and str(adapter.model.dtype) == "torch.bfloat16"
    result = extract(adapter, _gradient_image(200, 200), "Describe.", max_new_tokens=3)
    np.testing.assert_allclose(result.attention.astype(np.float32).sum(-1), 1.0, atol=2e-3)


def test_no_capture_outside_extract(tiny_adapter):
    """The registered implementation is the plain kernel when nothing captures: generate still works."""
    from attnstore.extraction.extract import generate_answer

    inputs = tiny_adapter.prepare(_gradient_image(100, 100), "Hi")
    assert generate_answer(tiny_adapter, inputs, 2).shape[0] > inputs["input_ids"].shape[1]
    assert tiny_adapter.text_config._attn_implementation == capture.implementation_name("sdpa")


def test_query_mode_and_prompt_errors(tiny_adapter):
    with pytest.raises(InvalidArgument, match="queries"):
        query_positions(np.zeros(3, np.int8), "images")
    with pytest.raises(InvalidArgument, match="prompt is empty"):
        extract(tiny_adapter, _gradient_image(64, 64), "   ")


def test_device_dtype_kernel_errors_are_one_line():
    with pytest.raises(InvalidArgument, match="attn_kernel.*must be one of"):
        capture.check_kernel("fast")
    with pytest.raises(InvalidArgument, match="flash_attention_2 needs a CUDA GPU"):
        capture.check_kernel("flash_attention_2")  # no GPU / flash-attn on the test machines
    with pytest.raises(InvalidArgument, match="device"):
        resolve_device("tpu")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgument, match="no CUDA GPU"):
            resolve_device("cuda:1")
    with pytest.raises(InvalidArgument, match="dtype"):
        resolve_dtype("float8", torch.device("cpu"))
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16


def _answers_and_stopping_token(adapter, images):
    """Each entry's greedy answer ids, and an end token that would stop the entries at different
    steps (one may not stop at all), or None where no answer token does."""
    free = extract_batch(adapter, images, PROMPTS, max_new_tokens=NEW_TOKENS)
    answers = [r.token_id[r.layout.kind == TokenKind.GENERATED].tolist() for r in free]
    lengths = lambda t: [a.index(t) + 1 if t in a else len(a) for a in answers]  # noqa: E731
    end = max({t for a in answers for t in a}, key=lambda t: len(set(lengths(t))))
    return answers, (end if len(set(lengths(end))) > 1 else None)


@pytest.mark.parametrize("family", FAMILIES)
def test_entries_ending_at_different_steps(family_adapter, transformers_reference, family, monkeypatch):
    """An end token stops its entry (its own row kept, the others padded on) while the batch goes on."""
    adapter = family_adapter(family)
    images = [_gradient_image(w, h, seed=i) for i, (w, h) in enumerate(IMAGES)]
    answers, end = _answers_and_stopping_token(adapter, images)
    banned = list(adapter.banned_token_ids())
    for _ in range(4):  # some tiny random models give every input one same answer: ban its first token, retry
        if end is not None:
            break
        banned.append(answers[0][0])
        monkeypatch.setattr(adapter, "banned_token_ids", lambda banned=tuple(banned): list(banned))
        answers, end = _answers_and_stopping_token(adapter, images)  # the reference suppresses them too
    assert end is not None, answers
    lengths = [a.index(end) + 1 if end in a else len(a) for a in answers]
    assert len(set(lengths)) > 1
    monkeypatch.setattr(adapter.model.generation_config, "eos_token_id", end)
    results = extract_batch(adapter, images, PROMPTS, max_new_tokens=NEW_TOKENS)
    for answer, n, result in zip(answers, lengths, results):
        assert result.token_id[result.layout.kind == TokenKind.GENERATED].tolist() == answer[:n]
    for image, prompt, result in zip(images, PROMPTS, results):
        plain = transformers_reference.generate(adapter, image, prompt, NEW_TOKENS)  # stops at the same token
        assert result.token_id[result.layout.kind == TokenKind.GENERATED].tolist() == plain.tolist()
        reference = transformers_reference.attention(adapter, image, prompt, result.token_id)
        np.testing.assert_allclose(
            result.attention.astype(np.float32), reference[:, :, result.query_position], rtol=0, atol=ATOL
        )


def test_dask_workers_spread_over_gpus(monkeypatch):
    """With several GPUs, plain "cuda" gives worker i GPU i mod count; other devices are used as given."""
    import types

    import distributed
    import torch

    from attnstore.extraction.distributed import worker_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    names = iter([0, 1, 2, 3])
    monkeypatch.setattr(distributed, "get_worker", lambda: types.SimpleNamespace(name=next(names)))
    assert [worker_device("cuda") for _ in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert worker_device("cuda:1") == "cuda:1" and worker_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert worker_device("cuda") == "cuda"


def test_the_end_tokens_row_is_captured_when_the_model_stops_itself():
    """Random tiny models rarely emit their end token; the shipped demo model answers one word and
    stops, so the extra fed-back step for the end token's row must run."""
    from attnstore.extraction.demo import demo_scene_items, has_trained_model, trained_model_dir
    from attnstore.inputs.images import load_image

    if not has_trained_model():
        pytest.skip("this installation ships no demo model")
    adapter = load_adapter(str(trained_model_dir()))
    items = demo_scene_items(Path(tempfile.mkdtemp()), n_scenes=2, seed=11)
    results = extract_batch(adapter, [load_image(i.path) for i in items], [i.prompt for i in items], max_new_tokens=3)
    for result in results:
        assert result.token_id[-1] in adapter.eos_token_ids  # the model stopped by itself
        np.testing.assert_allclose(result.attention.astype(np.float32).sum(-1), 1.0, atol=5e-3)
