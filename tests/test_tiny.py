"""Tiny offline checkpoints: they load with plain Auto classes, train, render Qwen's chat format, and rebuild
byte for byte."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import FAMILIES, FIXTURES, shared_or_skip
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

import llscore_sim.tiny
from llscore.prompts import PromptContract
from llscore_sim.tiny import build_tiny_checkpoint

CONTRACT = PromptContract()
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def _images(n: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8)) for i in range(n)]


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_and_gives_finite_loss(tiny_checkpoints, family):
    processor = AutoProcessor.from_pretrained(tiny_checkpoints[family])
    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoints[family])
    assert model.config.model_type == family
    texts = [
        processor.apply_chat_template(
            CONTRACT.messages(task, with_degraded=True), continue_final_message=True
        )
        for task in ("quality", "hallucination")
    ]
    batch = processor(text=texts, images=[_images(2, 0), _images(2, 1)], padding=True, return_tensors="pt")
    # transformers 5 needs the image/text token map to build M-RoPE positions; the Qwen processors return it.
    assert batch["mm_token_type_ids"].sum() == (batch["input_ids"] == model.config.image_token_id).sum() > 0
    assert batch["image_grid_thw"].shape == (4, 3)
    loss = model(**batch, labels=batch["input_ids"]).loss
    assert torch.isfinite(loss) and loss > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_local_tokenizer(tiny_checkpoints, family):
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoints[family])
    config = AutoModelForImageTextToText.from_pretrained(tiny_checkpoints[family]).config
    for word in CONTRACT.answer_words:
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1, word
    assert config.text_config.vocab_size == len(tokenizer)
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>"
    assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_template(tiny_checkpoints, family):
    processor = AutoProcessor.from_pretrained(tiny_checkpoints[family])
    messages = CONTRACT.messages("quality", with_degraded=True)
    scored = processor.apply_chat_template(messages, continue_final_message=True)
    assert "<|im_start|>user\n" in scored
    assert scored.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    assert scored.endswith(f"<|im_start|>assistant\n{CONTRACT.quality_stem}")
    assert scored.startswith("<|im_start|>system\n") == (family != "qwen3_vl")
    prompt = processor.apply_chat_template(messages[:1], add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_answer_word_that_splits_is_rejected(tmp_path, monkeypatch):
    contract = PromptContract(yes_no_words=(" Yes", " Nope-nope"))
    monkeypatch.setattr(llscore_sim.tiny, "PromptContract", lambda: contract)
    with pytest.raises(ValueError, match="Nope-nope"):
        build_tiny_checkpoint("qwen2_vl", tmp_path / "bad")


def test_same_seed_same_bytes_other_seed_other_weights(tiny_checkpoints, tmp_path):
    reference = tiny_checkpoints["qwen2_5_vl"]  # built with seed 0
    same = build_tiny_checkpoint("qwen2_5_vl", tmp_path / "same", seed=0)
    other = build_tiny_checkpoint("qwen2_5_vl", tmp_path / "other", seed=1)
    for name in ("model.safetensors", "config.json", *TOKENIZER_FILES):
        assert (same / name).read_bytes() == (reference / name).read_bytes(), name
    assert (other / "model.safetensors").read_bytes() != (reference / "model.safetensors").read_bytes()
    for name in TOKENIZER_FILES:
        assert (other / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.mark.parametrize("family", FAMILIES)
def test_real_tokenizer(tmp_path, family):
    source = shared_or_skip(FIXTURES / f"{family}_processor")
    out = build_tiny_checkpoint(family, tmp_path / family, tokenizer_from=source)
    processor = AutoProcessor.from_pretrained(out)
    config = AutoModelForImageTextToText.from_pretrained(out).config
    real = AutoTokenizer.from_pretrained(source)
    assert len(processor.tokenizer) == len(real) == config.text_config.vocab_size > 150_000
    assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == config.image_token_id == 151655
    for word in CONTRACT.answer_words:
        assert processor.tokenizer.encode(word) == real.encode(word) and len(real.encode(word)) == 1, word
    scored = processor.apply_chat_template(CONTRACT.messages("quality", True), continue_final_message=True)
    assert scored.endswith(CONTRACT.quality_stem)


def test_cli(tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "llscore_sim.tiny", "--family", "qwen3_vl", "--out", str(out), "--seed", "3"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip().endswith(str(out))
    assert AutoModelForImageTextToText.from_pretrained(out).config.model_type == "qwen3_vl"
    assert AutoProcessor.from_pretrained(out).image_processor.patch_size == 16


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_tower_sized_apart_from_the_llm(tmp_path, family):
    """The capacity sweep's shapes (bench/capacity_sweep.py): a wider tower and one patch per visual token give
    four times the tokens from the same 112 px, and the tower's output still meets the LLM's width."""
    from llscore import LLScore
    from llscore.modeling import write_llscore_config
    from llscore.prompts import LLScoreConfig, ResolutionRule

    out = build_tiny_checkpoint(family, tmp_path / family, vision_width=2, vision_layers=3, merge_size=1)
    model = AutoModelForImageTextToText.from_pretrained(out)
    vision, text = model.config.vision_config, model.config.text_config
    tower_width = vision.embed_dim if family == "qwen2_vl" else vision.hidden_size
    assert (tower_width, vision.depth, vision.spatial_merge_size) == (64, 3, 1)
    assert text.hidden_size == 64 and text.num_hidden_layers == 2
    patch = vision.patch_size
    rule = ResolutionRule(min_pixels=(2 * patch) ** 2, max_pixels=(8 * patch) ** 2)
    write_llscore_config(LLScoreConfig(resolution=rule), out)
    scorer = LLScore.from_pretrained(out)
    image = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (8 * patch, 8 * patch, 3), dtype=np.uint8)
    )
    inputs = scorer.backend.builder("quality", [image], [image])
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == 2 * 64  # 8 x 8 patches, each a token
    assert np.isfinite(scorer.score([image], [image]).score).all()
