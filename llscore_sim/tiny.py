"""Tiny random Qwen-VL checkpoints that build offline in seconds, for tests and CPU smoke runs.

A checkpoint written here is a complete directory (config, safetensors weights, tokenizer, chat template,
image and video processors) that plain `AutoProcessor` / `AutoModelForImageTextToText` load without network
or `trust_remote_code`, so every code path that takes a real Qwen-VL checkpoint can be exercised on it.
The default tokenizer is a byte-level BPE trained here on the prompt contract plus generic English, with
Qwen's special tokens; `tokenizer_from` swaps in real Qwen tokenizer files instead.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer, models, trainers
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    PreTrainedConfig,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLConfig,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLConfig,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from llscore.families import FAMILIES
from llscore.files import weights_like_other_files
from llscore.prompts import PromptContract
from llscore.scoring import check_answer_words

# Qwen's special tokens in Qwen's id order; like the real tokenizer, they follow the BPE vocabulary.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
BPE_VOCAB_SIZE = 4096
TEXT_HIDDEN = 64
WIDTH_SCALED = {"embed_dim", "hidden_size", "intermediate_size", "out_hidden_size"}

# Qwen's conversation format, each image as vision_start/image_pad/vision_end. `continue_final_message` needs
# no template support: transformers cuts the render right after the last message's text.
_CHAT_TURNS = r"""
{%- for message in messages %}
    {{- '<|im_start|>' + message.role + '\n' }}
    {%- if message.content is string %}
        {{- message.content }}
    {%- else %}
        {%- for item in message.content %}
            {%- if item.type == 'image' or 'image' in item or 'image_url' in item %}
                {{- '<|vision_start|><|image_pad|><|vision_end|>' }}
            {%- elif item.type == 'video' or 'video' in item %}
                {{- '<|vision_start|><|video_pad|><|vision_end|>' }}
            {%- elif 'text' in item %}
                {{- item.text }}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
    {{- '<|im_end|>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""
# Qwen2/2.5-VL open with a default system turn; Qwen3-VL does not.
_DEFAULT_SYSTEM = r"""
{%- if messages[0].role != 'system' %}
    {{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
{%- endif %}"""
QWEN2_CHAT_TEMPLATE = (_DEFAULT_SYSTEM + _CHAT_TURNS).strip()
QWEN3_CHAT_TEMPLATE = _CHAT_TURNS.strip()

# Generic English for the BPE: base words with affixes give enough distinct words to fill ~4k merges.
_ENGLISH_WORDS = """
time year people way day man thing woman life child world school state family student group country problem
hand part place case week company system program question work number night point home water room mother area
money story fact month right study book eye job word business issue side kind head house service friend father
power hour game line end member law car city community name team minute idea body information back parent face
level office door health person art war history party result change morning reason research girl moment air
teacher force education foot boy age policy process music market sense nation plan college interest death
experience effect class control care field development role effort rate heart show leader light voice mind
price report decision son view town road arm difference value building action model season society director
position player record paper space ground form event matter center couple site project activity star table
court situation cost industry figure street image phone data picture practice piece land product doctor wall
worker news test movie love support technology step baby computer type attention film tree source hair window
evidence truth camera colour detail texture noise blur edge shadow sky cloud river flower leaf stone bridge
garden forest beach mountain ocean open walk talk play turn start help hear move live believe hold bring
happen write provide stand lose pay meet include continue learn lead understand watch follow stop create speak
read spend grow offer remember consider appear buy wait serve send expect build stay fall cut reach remain
suggest raise pass sell require decide pull restore paint clean repair print measure collect compare improve
notice protect share sharpen smooth brighten darken new good high old great big small large young different
long little important bad early able late hard public real best better sure free true whole clear strong
certain recent possible dark bright soft sharp quiet warm cold heavy fresh empty green yellow red blue white
black brown grey
"""
_PREFIXES = ("",) * 6 + ("re", "un", "over", "pre", "out", "mis")
_SUFFIXES = ("",) * 3 + ("s", "ed", "ing", "er", "ly", "ness", "ful", "less", "able")


@dataclass(frozen=True)
class _Family:
    """What differs between the Qwen-VL generations at tiny scale."""

    config_class: type[PreTrainedConfig]
    processor_class: type[ProcessorMixin]
    video_processor_class: type
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    chat_template: str
    rope_parameters: dict
    vision_config: dict


TINY_ROPE_THETA = 30.0
"""Text M-RoPE base of the tiny models. The real models' bases (1e6, 5e6) spread 64 rotary frequencies over
their positions; a tiny head_dim of 16 has 8, and with a base of 1e6 almost all of them are too slow to tell
the restored image's tokens from the degraded input's, so the LLM cannot read one image without the other. A
sweep of theta in {3, 10, 30, 100, 300, 1e6} on reading a visual property (docs/training.md) put 30 best."""
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# head_dim 16 -> 8 rotary frequencies, split over (temporal, height, width); each section must sum to 8.
TINY_SPECS = {
    "qwen2_vl": _Family(
        Qwen2VLConfig,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
        chat_template=QWEN2_CHAT_TEMPLATE,
        rope_parameters={"rope_type": "default", "rope_theta": TINY_ROPE_THETA, "mrope_section": [2, 3, 3]},
        vision_config={"embed_dim": 32, "hidden_size": TEXT_HIDDEN, "num_heads": 2, "mlp_ratio": 2},
    ),
    "qwen2_5_vl": _Family(
        Qwen2_5_VLConfig,
        Qwen2_5_VLProcessor,
        Qwen2VLVideoProcessor,
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
        chat_template=QWEN2_CHAT_TEMPLATE,
        rope_parameters={"rope_type": "default", "rope_theta": TINY_ROPE_THETA, "mrope_section": [2, 3, 3]},
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": TEXT_HIDDEN,
            "window_size": 112,
            "fullatt_block_indexes": [1],
            "tokens_per_second": 2,
        },
    ),
    "qwen3_vl": _Family(
        Qwen3VLConfig,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        chat_template=QWEN3_CHAT_TEMPLATE,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": TINY_ROPE_THETA,
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": TEXT_HIDDEN,
            "num_position_embeddings": 256,
            "deepstack_visual_indexes": [0],
        },
    ),
}


def _english_lines(n: int = 600) -> list[str]:
    """Seeded generic English so that the BPE learns ordinary words, not only the prompt contract."""
    rng, words = random.Random(0), _ENGLISH_WORDS.split()
    lines = []
    for _ in range(n):
        line = [
            rng.choice(_PREFIXES) + rng.choice(words) + rng.choice(_SUFFIXES)
            for _ in range(rng.randint(6, 14))
        ]
        lines.append(" ".join(line).capitalize() + rng.choice(".,?!") + f" {rng.randint(0, 999)}")
    return lines


def _contract_lines(contract: PromptContract) -> list[str]:
    """Every string of the prompt contract, each answer word after its stem as the model will read it."""
    lines = [*contract.quality_questions, *contract.hallucination_questions]
    lines += [contract.degraded_caption, contract.restored_caption, contract.no_reference_caption]
    lines += [f"{contract.quality_stem}{word}." for word in contract.level_words]
    lines += [f"{contract.hallucination_stem}{word}." for word in contract.yes_no_words]
    lines += ["You are a helpful assistant.", "".join(contract.answer_words)]
    return lines


def train_tokenizer(contract: PromptContract | None = None) -> Qwen2Tokenizer:
    """A deterministic byte-level BPE with Qwen's normaliser, split regex and special tokens."""
    contract = contract or PromptContract()
    qwen = Qwen2Tokenizer()  # borrow Qwen's normaliser and pre-tokenizer rather than copying the regex
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = qwen.backend_tokenizer.normalizer
    bpe.pre_tokenizer = qwen.backend_tokenizer.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE, initial_alphabet=ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(_contract_lines(contract) * 20 + _english_lines(), trainer=trainer)
    vocab = bpe.get_vocab()
    vocab.update({token: len(vocab) + i for i, token in enumerate(SPECIAL_TOKENS)})
    merges = [tuple(pair) for pair in json.loads(bpe.to_str())["model"]["merges"]]
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(SPECIAL_TOKENS[1:]),
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )


def tiny_config(
    family: str,
    tokenizer: PreTrainedTokenizerBase,
    width: int = 1,
    layers: int = 2,
    rope_theta: float | None = None,
    mrope_section: Sequence[int] | None = None,
    vision_width: int | None = None,
    vision_layers: int | None = None,
    merge_size: int = 2,
) -> PreTrainedConfig:
    """The family's config at `width` times the tiny sizes (hidden 64 text / 32 vision) with `layers` layers.

    `rope_theta` / `mrope_section` replace the family's text M-RoPE base and its (temporal, height, width)
    split of the `width * 8` rotary frequencies (default: the family's split times `width`).
    `vision_width` / `vision_layers` size the vision tower apart from the LLM (default: `width` / `layers`), and
    `merge_size` is the side of the patch square merged into one visual token (the families' 2, or 1: four
    times the tokens from the same pixels; docs/training.md's capacity sweep).
    """
    vision_width = width if vision_width is None else vision_width
    vision_layers = layers if vision_layers is None else vision_layers
    spec = TINY_SPECS[family]
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    rope = dict(spec.rope_parameters)
    rope["mrope_section"] = [width * n for n in rope["mrope_section"]]
    if rope_theta is not None:
        rope["rope_theta"] = float(rope_theta)
    if mrope_section is not None:
        if len(mrope_section) != 3 or sum(mrope_section) != width * TEXT_HIDDEN // 8:
            raise ValueError(
                f"mrope_section must be 3 sizes summing to head_dim / 2 = {width * TEXT_HIDDEN // 8}, "
                f"got {list(mrope_section)}"
            )
        rope["mrope_section"] = [int(n) for n in mrope_section]
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": width * TEXT_HIDDEN,
        "intermediate_size": 2 * width * TEXT_HIDDEN,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rope_parameters": rope,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": tokenizer.pad_token_id,
    }
    if family == "qwen3_vl":
        text_config["head_dim"] = width * TEXT_HIDDEN // 4
    output_key = "hidden_size" if family == "qwen2_vl" else "out_hidden_size"  # what feeds the LLM
    vision_config = {
        "depth": vision_layers,
        "patch_size": FAMILIES[family].patch_size,
        "spatial_merge_size": merge_size,
        "temporal_patch_size": 2,
        **{k: vision_width * v if k in WIDTH_SCALED else v for k, v in spec.vision_config.items()},
        output_key: width * TEXT_HIDDEN,
    }
    # The small member of every family (2B / 3B / 4B) ties input and output embeddings.
    return spec.config_class(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def _processor(
    family: str, tokenizer: PreTrainedTokenizerBase, chat_template: str, merge_size: int = 2
) -> ProcessorMixin:
    """The family's processor with a small pixel budget (the pixels of 4 to 64 tokens of 2 x 2 patches) to keep
    CPU runs cheap."""
    spec, layout = TINY_SPECS[family], FAMILIES[family]
    factor = layout.token_side()
    pixels = {"size": {"shortest_edge": factor * factor * 4, "longest_edge": factor * factor * 64}}
    vision = {
        "patch_size": layout.patch_size,
        "merge_size": merge_size,
        "image_mean": spec.image_mean,
        "image_std": spec.image_std,
    }
    return spec.processor_class(
        image_processor=Qwen2VLImageProcessor(**pixels, **vision),
        tokenizer=tokenizer,
        video_processor=spec.video_processor_class(**pixels, **vision),
        chat_template=chat_template,
    )


def recorded_shape(weights: str | Path) -> dict:
    """The shape (`build_tiny_checkpoint`'s width, depth and merge arguments) that pretrained `weights` were made
    with, from the record data_prep/pretrain_tiny_base.py writes beside them; {} (the default shape) when the
    record names none."""
    record = Path(weights).with_suffix(".json")
    return json.loads(record.read_text()).get("shape", {}) if record.is_file() else {}


def build_tiny_checkpoint(
    family: str,
    out: str | Path,
    tokenizer_from: str | Path | None = None,
    seed: int = 0,
    width: int = 1,
    layers: int = 2,
    rope_theta: float | None = None,
    mrope_section: Sequence[int] | None = None,
    weights: str | Path | None = None,
    vision_width: int | None = None,
    vision_layers: int | None = None,
    merge_size: int = 2,
) -> Path:
    """Write a loadable random `family` checkpoint to `out`; the same arguments give byte-identical files.

    With `tokenizer_from`, the tokenizer and chat template come from that directory (e.g. real Qwen files),
    and the model's vocabulary and special-token ids follow it. `width` multiplies every hidden size (the
    tests use 1; the CPU main job uses a wider model so that it can learn from scratch in minutes).

    `rope_theta` / `mrope_section` override the text M-RoPE (see `tiny_config` and `TINY_ROPE_THETA`).
    `vision_width` / `vision_layers` / `merge_size` shape the vision tower apart from the LLM (`tiny_config`).
    `weights` loads a state dict saved by `save_weights` (e.g. the shipped low-level-pretrained tiny base,
    `assets/`) over the random initialisation, strictly: the architecture must match exactly.
    """
    if family not in TINY_SPECS:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(TINY_SPECS)}")
    if tokenizer_from is None:
        tokenizer, chat_template = train_tokenizer(), TINY_SPECS[family].chat_template
    else:
        source = AutoProcessor.from_pretrained(tokenizer_from)
        tokenizer, chat_template = source.tokenizer, source.chat_template or TINY_SPECS[family].chat_template
    check_answer_words(tokenizer, PromptContract())

    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG state
        torch.manual_seed(seed)
        config = tiny_config(
            family,
            tokenizer,
            width,
            layers,
            rope_theta,
            mrope_section,
            vision_width,
            vision_layers,
            merge_size,
        )
        model = AutoModelForImageTextToText.from_config(config)
    if weights is not None:
        load_model(model, str(weights), strict=True)
    out = Path(out)
    model.save_pretrained(out)
    _processor(family, tokenizer, chat_template, merge_size).save_pretrained(out)
    weights_like_other_files(out)
    return out


def save_weights(model, path: str | Path) -> Path:
    """The model's weights as one safetensors file under its module names (what `weights=` loads back); tied
    weights are stored once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path))
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Build a tiny random Qwen-VL checkpoint for offline tests.")
    parser.add_argument("--family", required=True, choices=sorted(TINY_SPECS))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tokenizer-from", type=Path, help="directory with real Qwen tokenizer files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=1, help="multiplier of every hidden size")
    parser.add_argument("--layers", type=int, default=2, help="LLM layers and vision blocks")
    parser.add_argument(
        "--vision-width", type=int, help="multiplier of the vision tower's sizes (default: --width)"
    )
    parser.add_argument("--vision-layers", type=int, help="vision blocks (default: --layers)")
    parser.add_argument("--merge-size", type=int, default=2, help="patches merged per visual token, per side")
    parser.add_argument("--rope-theta", type=float, help="text M-RoPE base (default: the family's)")
    parser.add_argument(
        "--mrope-section",
        type=lambda text: [int(n) for n in text.split(",")],
        help="temporal,height,width rotary frequency counts, summing to 8 * width (default: the family's)",
    )
    args = parser.parse_args(argv)
    out = build_tiny_checkpoint(
        args.family,
        args.out,
        args.tokenizer_from,
        args.seed,
        args.width,
        args.layers,
        rope_theta=args.rope_theta,
        mrope_section=args.mrope_section,
        vision_width=args.vision_width,
        vision_layers=args.vision_layers,
        merge_size=args.merge_size,
    )
    print(out)
    return out


if __name__ == "__main__":
    main()
