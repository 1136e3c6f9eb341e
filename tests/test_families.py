"""llscore/families.py: one entry per base-model family, and every entry true to the models it describes."""

import json

import numpy as np
import pytest
import torch
from conftest import FAMILIES as TESTED_FAMILIES
from conftest import FIXTURES, shared_or_skip
from PIL import Image
from scripts import load_script, short_run
from transformers import AutoModelForImageTextToText

from llscore.api import LLScore
from llscore.data.build import build_dataset
from llscore.errors import ConfigError, ImageError
from llscore.families import FAMILIES, ModelFamily, family_of, family_of_processor, family_of_real_size
from llscore.modeling import LoraSettings
from llscore.prompts import ResolutionRule
from llscore_sim.settings import load_config
from llscore_sim.tiny import TINY_SPECS


def test_every_family_has_a_tiny_model_and_is_tested():
    assert set(FAMILIES) == set(TINY_SPECS) == set(TESTED_FAMILIES)
    assert all(name == family.model_type for name, family in FAMILIES.items())
    assert family_of_real_size("qwen3_vl_8b") is FAMILIES["qwen3_vl"]


@pytest.mark.parametrize("name", TESTED_FAMILIES)
def test_a_family_entry_names_the_modules_of_its_models(tiny_checkpoints, name):
    from peft import get_peft_model

    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoints[name])
    family = family_of(model)
    assert family is FAMILIES[name]
    tower = family.vision_tower_of(model)
    vision = {n for n, _ in model.named_parameters() if family.is_vision_parameter(n)}
    assert len(vision) == len(list(tower.parameters())) > 0
    assert model.get_submodule(family.language_model) is model.model.language_model
    linear = {n.rsplit(".", 1)[-1] for n, m in tower.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(family.vision_linear_layers) <= linear, (
        "a vision layer named in the table that the tower lacks"
    )

    wrapped = get_peft_model(
        model, LoraSettings(use_lora=True, lora_r=2, lora_include_vision=True).peft_config(family)
    )
    names = [
        n
        for n, m in wrapped.named_modules()
        if hasattr(m, "lora_A") and isinstance(m.lora_A, torch.nn.ModuleDict)
    ]
    in_tower = {n.rsplit(".", 1)[-1] for n in names if family.is_vision_parameter(n + ".")}
    in_llm = {n.rsplit(".", 1)[-1] for n in names if "language_model" in n}
    assert in_tower == set(family.vision_linear_layers) and in_llm == set(family.llm_linear_layers)
    assert len(names) == len(
        [n for n in names if family.is_vision_parameter(n + ".") or "language_model" in n]
    )


@pytest.mark.parametrize("name", TESTED_FAMILIES)
def test_a_family_drives_its_real_image_processor_as_the_processor_itself_does(name):
    """The family's behaviour against the real processor files: it finds its family from the processor alone, its
    public patch and merge sizes are the processor's, its visual-token grid is the one the processor makes, and its
    differentiable resize lands on the same pixel size as the processor's 8-bit path."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(shared_or_skip(FIXTURES / f"{name}_processor"))
    family = family_of_processor(processor)
    image_processor = processor.image_processor
    assert family is FAMILIES[name]
    assert (family.patch_size, family.merge_size) == (image_processor.patch_size, image_processor.merge_size)
    rule = ResolutionRule(min_pixels=64 * 28 * 28, max_pixels=256 * 28 * 28)
    for width, height in ((448, 448), (1000, 300), (97, 211), (2000, 12)):
        image = Image.new("RGB", (width, height), (90, 120, 30))
        grid = image_processor(images=[image], size=family.image_size(rule), return_tensors="pt")[
            "image_grid_thw"
        ]
        merge = image_processor.merge_size
        rows, columns = family.visual_token_grid(height, width, rule, image_processor)
        assert (rows * merge, columns * merge) == tuple(grid[0, 1:].tolist())
        pixels = torch.full((1, 3, height, width), 100.0, requires_grad=True)
        resized = family.resize(image_processor, pixels, rule)
        assert resized.shape[-2:] == (
            rows * family.token_side(image_processor),
            columns * family.token_side(),
        )
        resized.sum().backward()
        assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    assert family.visual_token_grid(448, 448, rule) == family.visual_token_grid(
        448, 448, rule, image_processor
    )


def test_a_family_refuses_an_aspect_beyond_its_limit_and_an_unknown_processor():
    family = FAMILIES["qwen2_5_vl"]
    family.check_aspect(200, 1, "edge.png")
    with pytest.raises(ImageError, match=r"^thin\.png: 201x1 pixels; qwen2_5_vl processors accept .* 200:1$"):
        family.check_aspect(201, 1, "thin.png")

    class OtherProcessor:
        pass

    with pytest.raises(ConfigError, match=r"processor OtherProcessor is not a family LL-Score knows"):
        family_of_processor(OtherProcessor())


def test_an_unknown_family_is_one_line_that_says_where_to_add_it():
    class Config:
        model_type = "llava"

    with pytest.raises(ConfigError, match=r"model type 'llava' is not a family .* llscore/families\.py"):
        family_of(Config())


def test_a_family_is_one_entry_that_training_and_scoring_follow(
    tiny_checkpoints, mini_bench, sample_images, tmp_path, monkeypatch
):
    """Qwen2-VL taken out of the table stops a run at the first line that needs its layout; registered again as
    one new entry, with its own LoRA targets, a run trains exactly the layers that entry names, and the
    checkpoint scores (its processor found by the entry's `processor_class`). Nothing else in the code knows the
    family."""
    train = load_script("train.py")
    prepared = build_dataset(mini_bench, tmp_path / "prepared")
    base = tiny_checkpoints["qwen2_vl"]
    lora = ["--use_lora", "true", "--lora_include_vision", "true", "--max_steps", "2"]
    monkeypatch.delitem(FAMILIES, "qwen2_vl")
    with pytest.raises(ConfigError, match=r"model type 'qwen2_vl' is not a family LL-Score knows"):
        train.run(load_config(None, short_run(base, prepared, tmp_path / "refused", *lora)))

    entry = ModelFamily(
        "qwen2_vl",
        vision_linear_layers=("qkv",),
        llm_linear_layers=("q_proj", "down_proj"),
        processor_class="Qwen2VLProcessor",
    )
    monkeypatch.setitem(FAMILIES, "qwen2_vl", entry)
    out = tmp_path / "run"
    train.run(load_config(None, short_run(base, prepared, out, *lora)))
    applied = json.loads((out / "training_settings.json").read_text())["applied"]
    assert applied["lora_layers"] == ["down_proj", "q_proj", "qkv"]
    scorer = LLScore.from_pretrained(out)  # the adapter over its base, as the entry's patterns placed it
    wrapped = {name.rsplit(".", 1)[-1] for name, m in scorer.model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == {"down_proj", "q_proj", "qkv"}
    scores = scorer.score(sample_images["restored"][:2], sample_images["degraded"][:2])
    assert np.isfinite(scores.score).all() and np.isfinite(scores.p_hallucination).all()
