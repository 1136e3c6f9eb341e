"""llscore/families.py: one entry per base-model family, and every entry true to the models it describes."""

import pytest
import torch
from conftest import FAMILIES as TESTED_FAMILIES
from transformers import AutoModelForImageTextToText

from llscore.errors import ConfigError
from llscore.families import FAMILIES, family_of, family_of_real_size
from llscore.modeling import LoraSettings
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

    wrapped = get_peft_model(model, LoraSettings(enabled=True, r=2, include_vision=True).peft_config(family))
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


def test_an_unknown_family_is_one_line_that_says_where_to_add_it():
    class Config:
        model_type = "llava"

    with pytest.raises(ConfigError, match=r"model type 'llava' is not a family .* llscore/families\.py"):
        family_of(Config())
