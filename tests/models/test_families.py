"""Every row kept (`queries="all"`, image rows too), per family: rows equal transformers' eager
output_attentions, a batch equals one by one, the answer is plain greedy generate's, rows are > 0 exactly
where the family's own mask allows (written out here, not read from the adapter), and the store records
that mask; and every family loads as itself. The registry-wide text-row checks: tests/extraction/test_extract.py."""

import json
from typing import NamedTuple

import numpy as np
import pytest
from support.vlm_family_checks import (
    RUN_IMAGES,
    causal,
    check_answer_is_plain_generate,
    check_batch_equals_one,
    check_mask,
    check_rows_equal_eager,
    check_store_validates,
    image_blocks,
)

from attnstore.extraction.demo import tiny_model_dir
from attnstore.models import FAMILIES, adapter_class
from attnstore.models.capture import implementation_name
from attnstore.schema import TokenKind

ALL_ROWS = tuple(RUN_IMAGES)  # the families whose every row is checked here


def causal_rule(runs, result, layer):
    return causal(result.n_key)


def prefix_rule(runs, result, layer):
    """PaliGemma: the prompt (image tokens, <bos>, prompt, "\\n") sees itself whole; the answer is causal."""
    prompt = result.layout.kind != TokenKind.GENERATED
    return causal(result.n_key) | (prompt[:, None] & prompt[None, :])


def image_blocks_rule(runs, result, layer):
    """Gemma 3: causal, OR within one image block (each view its own block); the sliding layer also
    drops keys a window or more behind the query."""
    config = runs.adapter().model.config
    text = config.get_text_config()
    n = result.n_key
    block = np.full(n, -1)
    for i, positions in enumerate(image_blocks(result.token_id, config.image_token_id)):
        block[positions] = i
    allowed = causal(n) | ((block[:, None] == block[None, :]) & (block[:, None] >= 0))
    if text.layer_types[layer] == "sliding_attention":
        q, k = np.indices((n, n))
        allowed &= k > q - text.sliding_window
    return allowed


# family -> (the store's attention_mask attr, the rule: (runs, result, layer) -> [query, key] allowed)
MASKS = {
    "gemma3": ("image_blocks", image_blocks_rule),
    "paligemma": ("prefix", prefix_rule),
    "internvl": ("causal", causal_rule),
    "mistral3": ("causal", causal_rule),
}


@pytest.mark.parametrize("kernel,batch_size", [("sdpa", 1), ("sdpa", 3), ("eager", 1), ("eager", 3)])
@pytest.mark.parametrize("family", ALL_ROWS)
def test_rows_equal_eager_output_attentions(family_runs, transformers_reference, family, kernel, batch_size):
    check_rows_equal_eager(family_runs(family), transformers_reference, kernel, batch_size)


@pytest.mark.parametrize("family", ALL_ROWS)
def test_batch_equals_batch_of_one(family_runs, family):
    check_batch_equals_one(family_runs(family))


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("family", ALL_ROWS)
def test_answer_is_plain_greedy_generate(family_runs, transformers_reference, family, batch_size):
    check_answer_is_plain_generate(family_runs(family), transformers_reference, batch_size)


@pytest.mark.parametrize("family", ALL_ROWS)
def test_rows_follow_the_family_mask(family_runs, family):
    runs, rule = family_runs(family), MASKS[family][1]
    check_mask(runs, lambda result, layer: rule(runs, result, layer))


@pytest.mark.parametrize("family", ALL_ROWS)
def test_store_records_the_mask_and_validates(family_runs, tmp_path, family):
    check_store_validates(family_runs(family), tmp_path, MASKS[family][0])


# -- loading: each family's tiny model, through `load_adapter` -----------------------------------------


class Loads(NamedTuple):
    settings: dict  # expected entries of `processor_settings()` (JSON provenance)
    saved_processor: str = ""  # processor_config.json's processor_class, where asserted
    loaded_processor: str = ""  # the loaded processor's class name, where asserted
    model_class: str = ""  # the loaded model's class name, where asserted


LOADS = {
    "llava": Loads({"crop_size": [112, 112], "patch_size": 14}),
    "llava_next": Loads({"patch_size": 14}),
    "llava_onevision": Loads({"patch_size": 14}),
    "qwen2_vl": Loads({"merge_size": 2, "max_pixels": 28 * 28 * 64}, saved_processor="Qwen2VLProcessor"),
    "qwen2_5_vl": Loads({"patch_size": 14}, "Qwen2_5_VLProcessor", model_class="Qwen2_5_VLForConditionalGeneration"),
    "qwen3_vl": Loads({"patch_size": 16}, "Qwen3VLProcessor", model_class="Qwen3VLForConditionalGeneration"),
    "gemma3": Loads({"image_seq_length": 16}),
    "paligemma": Loads({"image_seq_length": 64, "patch_size": 8}),
    "internvl": Loads({"max_patches": 6, "image_seq_length": 16}, saved_processor="InternVLProcessor"),
    "mistral3": Loads({"patch_size": 8, "spatial_merge_size": 2}, loaded_processor="PixtralProcessor"),
}


@pytest.mark.parametrize("family", LOADS)
def test_loads_as_its_family(family_adapter, family):
    """The registry picks the family's adapter from config.json; sdpa capture in the text model; no video
    processor (no torchvision needed); the processor settings recorded as provenance; its tiny builder declared."""
    adapter, folder, expected = family_adapter(family), tiny_model_dir(family), LOADS[family]
    assert type(adapter) is adapter_class(family) and adapter.family == family and adapter.random_weights
    assert json.loads((folder / "config.json").read_text())["model_type"] in FAMILIES[family].model_types
    assert adapter.text_config._attn_implementation == implementation_name("sdpa")
    assert getattr(adapter.processor, "video_processor", None) is None
    settings = json.loads(json.dumps(adapter.processor_settings()))  # JSON-serialisable
    assert {k: settings[k] for k in expected.settings} == expected.settings
    if expected.saved_processor:
        saved = json.loads((folder / "processor_config.json").read_text())["processor_class"]
        assert saved == expected.saved_processor
    if expected.loaded_processor:
        assert type(adapter.processor).__name__ == expected.loaded_processor
    if expected.model_class:
        assert type(adapter.model).__name__ == expected.model_class
    assert FAMILIES[family].info.tiny.endswith(f":build_random_{family}")
