"""The checked models: each architecture built from configs/models/<name>.json at its real size (or the family's
tiny width for a dry run) with random weights, saved as an LL-Score checkpoint, and its exact parameter counts
(bench/gpu_check.py; docs/performance.md)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import torch

from llscore.families import family_of, family_of_real_size
from llscore.modeling import load_processor, write_llscore_config
from llscore.prompts import LLScoreConfig

from .common import REPO, Setting, bench_script


def model_config(name: str, tokenizer, dry_run: bool):
    """The architecture at its real size (or the family's tiny width for a dry run) with the tokenizer's ids."""
    from transformers import AutoConfig

    from llscore_sim.tiny import tiny_config

    values = json.loads((REPO / "configs/models" / f"{name}.json").read_text())
    values.pop("_comment")
    if dry_run:
        config = tiny_config(family_of_real_size(name).model_type, tokenizer)
        config.text_config.vocab_size = values["text_config"]["vocab_size"]
        return config
    config = AutoConfig.for_model(**values)
    ids = tokenizer.convert_tokens_to_ids
    config.image_token_id, config.video_token_id = ids("<|image_pad|>"), ids("<|video_pad|>")
    config.vision_start_token_id, config.vision_end_token_id = ids("<|vision_start|>"), ids("<|vision_end|>")
    config.text_config.pad_token_id = tokenizer.pad_token_id
    config.text_config.eos_token_id = ids("<|im_end|>")
    return config


def fill_random(model, seed: int = 0, std: float = 0.02) -> None:
    """Random weights without one normal draw per parameter (8 billion at 7B): one block of draws tiled through
    every matrix, norm scales 1, biases 0. Memory and speed do not depend on the values."""
    block = torch.randn(1_000_003, generator=torch.Generator().manual_seed(seed)) * std
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if tensor.dim() == 1:
                tensor.fill_(1.0 if name.endswith("weight") else 0.0)
                continue
            flat = tensor.view(-1)
            for start in range(0, flat.numel(), block.numel()):
                flat[start : start + block.numel()].copy_(block[: flat.numel() - start])


def build(name: str, folder: Path, setting: Setting, dry_run: bool) -> dict:
    """A random model of `name` saved with a processor and the default prompt contract: an LL-Score checkpoint.
    On CPU the model is laid out on the meta device and filled (`fill_random`); on a GPU it is drawn there."""
    from transformers import AutoModelForImageTextToText

    from llscore_sim.tiny import build_tiny_checkpoint

    tiny = build_tiny_checkpoint(family_of_real_size(name).model_type, folder / "tokenizer")
    processor = load_processor(tiny, LLScoreConfig())
    config = model_config(name, processor.tokenizer, dry_run)
    torch.manual_seed(0)
    dtype = getattr(torch, setting.dtype)
    if setting.device == "cpu":
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
        model.to_empty(device="cpu")  # one new tensor per parameter: a tied output head is tied again
        model.tie_weights()
        fill_random(model)
    else:
        with torch.device(setting.device):
            model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    out = folder / name
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_llscore_config(LLScoreConfig(), out)
    parameters = {
        "total": sum(p.numel() for p in model.parameters()),  # a tied lm_head is counted once
        "vision": sum(
            p.numel() for n, p in model.named_parameters() if family_of(config).is_vision_parameter(n)
        ),
        "embedding": model.get_input_embeddings().weight.numel(),
        "lm_head": model.get_output_embeddings().weight.numel(),
        "lm_head_tied": model.get_output_embeddings().weight is model.get_input_embeddings().weight,
    }
    del model
    return {"parameters": parameters}


@cache
def architecture(name: str) -> dict[str, int]:
    """Exact parameter counts of the real architecture `name` (built on the meta device; LoRA at the recipes'
    rank)."""
    estimate = bench_script("estimate_memory")
    return estimate.parameter_counts(64, REPO / "configs/models" / f"{name}.json")
