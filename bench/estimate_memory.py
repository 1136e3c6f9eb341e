"""Per-GPU memory estimate for training LL-Score from Qwen2.5-VL-7B: LoRA, QLoRA and full fine-tuning.

    python bench/estimate_memory.py [--gpus 8] [--pairs-per-gpu 4] [--visual-tokens 1280]

Parameter counts are exact: the 7B architecture (configs/models/qwen2_5_vl_7b.json) is built on the
meta device and LoRA is applied with peft, so nothing is downloaded or allocated. Memory is then
    weights + gradients + optimizer state (sharded by ZeRO stage) + activations (gradient checkpointing) + overhead,
with activations estimated as the checkpointed layer inputs (2 bytes x layers x tokens x hidden) plus one
layer's full recomputation (~34 x tokens x hidden bytes, the usual transformer rule of thumb) and the logits of
the last position only (LL-Score reads one position per item). This is an estimate, not a measurement: no GPU
was available to check it; allow ~10-20% for allocator fragmentation and CUDA context (~1 GB).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml
from transformers import AutoConfig, AutoModelForImageTextToText

from llscore.families import family_of
from llscore.modeling import LoraSettings

GIB = 1024**3
REPO = Path(__file__).resolve().parents[1]
MODEL_CONFIG = REPO / "configs/models/qwen2_5_vl_7b.json"


def real_size_config(path: str | Path = MODEL_CONFIG):
    """A model config from configs/models/ (the public architecture values; no weights)."""
    values = json.loads(Path(path).read_text())
    values.pop("_comment", None)
    return AutoConfig.for_model(**values)


def parameter_counts(lora_rank: int, path: str | Path = MODEL_CONFIG) -> dict[str, int]:
    """Exact parameter counts of the architecture at `path` (and its LoRA at `lora_rank`), with the dimensions
    that the activation estimate needs."""
    config = real_size_config(path)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    total = sum(p.numel() for p in model.parameters())  # a tied output head is counted once
    family = family_of(config)
    vision = sum(p.numel() for n, p in model.named_parameters() if family.is_vision_parameter(n))
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    embeddings = embedding.numel() + (0 if head is embedding else head.numel())
    from peft import get_peft_model

    peft_model = get_peft_model(
        model, LoraSettings(use_lora=True, lora_r=lora_rank, lora_alpha=2 * lora_rank).peft_config(family)
    )
    lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    text, tower = config.text_config, config.vision_config
    return {
        "total": total,
        "vision": vision,
        "llm": total - vision,
        "embeddings": embeddings,
        "lora": lora,
        "hidden": text.hidden_size,
        "layers": text.num_hidden_layers,
        "vision_hidden": tower.hidden_size,
        "vision_layers": tower.depth,
        "token_side": family.token_side(),  # pixels per visual-token side
        "patches_per_token": family.merge_size**2,
    }


def activations(tokens: int, hidden: int, layers: int) -> float:
    """Bytes of activations with gradient checkpointing in bf16."""
    return 2 * layers * tokens * hidden + 34 * tokens * hidden


def estimate(counts: dict[str, int], gpus: int, pairs: int, visual_tokens: int) -> list[dict]:
    text_tokens = 120
    images_per_step = 2 * pairs
    # Each item holds the degraded input and the restored image; both questions are asked (two forwards whose
    # graphs live until the one backward), hence the factor 2.
    tokens = 2 * images_per_step * (2 * visual_tokens + text_tokens)
    act_llm = activations(tokens, counts["hidden"], counts["layers"])
    act_vision = activations(  # the tower runs on every patch of a merged token
        2 * images_per_step * 2 * visual_tokens * counts["patches_per_token"],
        counts["vision_hidden"],
        counts["vision_layers"],
    )
    total, lora, vision, llm = counts["total"], counts["lora"], counts["vision"], counts["llm"]
    embeddings = counts["embeddings"]  # input embedding and lm_head (once when tied)
    rows = []
    # LoRA, ZeRO-2: bf16 frozen weights replicated; trainable LoRA params in fp32 with grads + Adam (16 B/param).
    rows.append(
        {
            "mode": "LoRA r=64, bf16, ZeRO-2",
            "weights": 2 * total,
            "train_state": 16 * lora / gpus + 4 * lora,
            "act": act_llm,  # the frozen vision tower keeps no activations for a backward pass
        }
    )
    # QLoRA: NF4 LLM layers (~0.5 B/param + quantisation constants); peft's prepare_model_for_kbit_training casts
    # what is not quantised (vision tower, embeddings, lm_head) to fp32; LoRA fp32 + Adam (paged 8-bit: 6 B).
    rows.append(
        {
            "mode": "QLoRA r=64, NF4 LLM layers + fp32 vision / embeddings, 1 GPU",
            "weights": 0.53 * (llm - embeddings) + 4 * (vision + embeddings),
            "train_state": 10 * lora,
            "act": act_llm,
        }
    )
    # Full fine-tune, ZeRO-3: bf16 weights + bf16 grads + fp32 master + Adam m,v = 16 B/param, all sharded.
    rows.append(
        {
            "mode": "full, bf16, ZeRO-3",
            "weights": 2 * total / gpus,
            "train_state": 14 * total / gpus,
            "act": act_llm + act_vision,
        }
    )
    for row in rows:
        row["total_gib"] = (row["weights"] + row["train_state"] + row["act"]) / GIB + 1.5
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--pairs-per-gpu", type=int, default=4, help="per_device_train_batch_size (pairs)")
    parser.add_argument(
        "--visual-tokens",
        type=int,
        default=None,
        help="merged tokens per image (default: the most the family's recipe allows, max_pixels over the pixels "
        "of one token)",
    )
    parser.add_argument("--lora-rank", type=int, default=64)
    args = parser.parse_args()
    counts = parameter_counts(args.lora_rank)
    if args.visual_tokens is None:
        recipe = yaml.safe_load(
            (REPO / "configs" / f"{family_of(real_size_config()).recipe}.yaml").read_text()
        )
        args.visual_tokens = recipe["max_pixels"] // counts["token_side"] ** 2
    print(
        f"Qwen2.5-VL-7B: {counts['total'] / 1e9:.2f}B parameters (LLM {counts['llm'] / 1e9:.2f}B, vision "
        f"{counts['vision'] / 1e9:.2f}B); LoRA r={args.lora_rank} on the LLM's linear layers: {counts['lora'] / 1e6:.1f}M"
    )
    print(
        f"{args.pairs_per_gpu} pairs per GPU ({4 * args.pairs_per_gpu} images incl. inputs), {args.visual_tokens} visual tokens per image, {args.gpus} GPUs\n"
    )
    print(f"{'mode':<42} {'weights':>8} {'train state':>12} {'activations':>12} {'per GPU':>9}")
    for row in estimate(counts, args.gpus, args.pairs_per_gpu, args.visual_tokens):
        print(
            f"{row['mode']:<42} {row['weights'] / GIB:>7.1f}G {row['train_state'] / GIB:>11.1f}G "
            f"{row['act'] / GIB:>11.1f}G {row['total_gib']:>8.1f}G"
        )


if __name__ == "__main__":
    main()
