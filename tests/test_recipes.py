"""Every shipped GPU recipe, end to end on CPU: its own DeepSpeed stage and settings on a tiny model of its family
built with the real Qwen tokenizer; then its checkpoint loads and scores."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import FIXTURES, shared_or_skip
from scripts import short_run
from transformers import AutoModelForImageTextToText

from llscore.api import LLScore
from llscore.data.build import build_dataset
from llscore.families import FAMILIES
from llscore_sim.tiny import build_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
RECIPES = {
    "llscore_qwen": "qwen2_5_vl",
    "llscore_qwen_full": "qwen2_5_vl",
    "llscore_qlora": "qwen2_5_vl",
    "llscore_qwen3vl": "qwen3_vl",
    "llscore_paper": "qwen3_vl",
    "llscore_paper_tiny": "qwen2_5_vl",
    "llscore_qwen_full+heads": "qwen2_5_vl",  # the head formulation under ZeRO-3 (weights partitioned at load)
}


@pytest.fixture(scope="module")
def prepared(mini_bench, tmp_path_factory) -> Path:
    return build_dataset(mini_bench, tmp_path_factory.mktemp("prep") / "prepared")


def launcher(recipe: dict, folder: Path) -> list[str]:
    """`accelerate launch` with the recipe's own DeepSpeed config on one CPU process (gloo), or plain."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1"]
    stage = recipe.get("deepspeed")
    if stage is None:
        return [*launch, "--config_file", str(REPO / "configs/accelerate/cpu.yaml")]
    config = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "DEEPSPEED",
        "deepspeed_config": {"deepspeed_config_file": str(REPO / stage), "zero3_init_flag": False},
        "num_machines": 1,
        "num_processes": 1,
        "machine_rank": 0,
    }
    path = folder / "accelerate.yaml"
    path.write_text(yaml.safe_dump(config))
    return [*launch, "--config_file", str(path)]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECIPES))
def test_a_shipped_recipe_trains_validates_and_its_checkpoint_scores(name, prepared, sample_images, tmp_path):
    family = RECIPES[name]
    tokenizer = shared_or_skip(FIXTURES / f"{family}_processor")  # the real Qwen tokenizer files
    base = build_tiny_checkpoint(family, tmp_path / "base", tokenizer_from=tokenizer)
    name, _, formulation = name.partition("+")
    recipe = yaml.safe_load((REPO / f"configs/{name}.yaml").read_text())
    variant = ["--formulation", formulation] if formulation else []
    recipe.update(formulation=formulation or recipe.get("formulation", "levels"))
    out = tmp_path / "run"
    overrides = short_run(
        base, prepared, out, "--max_steps", "2", "--bf16", "false", "--dataloader_num_workers", "0"
    )
    overrides += ["--validate_before_training", "true", "--eval_strategy", "steps", "--eval_steps", "2"]
    overrides += [
        "--save_steps",
        "2",
        "--load_best_model_at_end",
        "true",
        "--gradient_accumulation_steps",
        "1",
    ]
    overrides += [
        "--min_pixels",
        "3136",
        "--max_pixels",
        "12544",
        "--warmup_steps",
        "0",
    ]
    overrides += ["--per_device_eval_batch_size", "8", "--max_val_images", "24", "--report_to", "none"]
    overrides += ["--ddp_backend", "gloo"]
    cache = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache/llscore/torch_extensions"))
    env = {**os.environ, "OMP_NUM_THREADS": "2", "DS_ACCELERATOR": "cpu", "TORCH_EXTENSIONS_DIR": str(cache)}
    env["ACCELERATE_USE_CPU"] = "false" if "deepspeed" in recipe else "true"
    command = [
        *launcher(recipe, tmp_path),
        str(REPO / "train.py"),
        "--config",
        f"configs/{name}.yaml",
        *overrides,
        *variant,
    ]
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]

    validation = json.loads((out / "validation.json").read_text())
    assert set(validation) == {"before", "after", "rivals"}
    assert set(validation["rivals"]) == {"restoration_strength", "restorer_prior"}
    state = json.loads((out / "trainer_state.json").read_text())
    assert any("eval_srcc" in entry for entry in state["log_history"]), "validation ran during training"
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert losses and np.isfinite(losses).all()
    logged = {key for entry in state["log_history"] for key in entry if key.startswith("loss_")}
    if recipe["formulation"] == "heads":  # each formulation logs its own terms only
        assert "loss_pair_ranking" in logged and "loss_quality_kl" not in logged
    else:
        assert "loss_quality_kl" in logged and "loss_pair_ranking" not in logged
        assert ("loss_level_ce" in logged) == bool(recipe.get("level_ce"))
    # what the run applied, as the recipe says: its ZeRO stage, LoRA on its target layers, 4-bit layers
    applied = json.loads((out / "training_settings.json").read_text())["applied"]
    stage = recipe.get("deepspeed")
    assert applied["zero_stage"] == (
        json.loads((REPO / stage).read_text())["zero_optimization"]["stage"] if stage else None
    )
    if recipe.get("use_lora") or recipe.get("quantization"):
        targets = recipe.get("lora_target_layers", FAMILIES[family].llm_linear_layers)
        assert applied["lora_layers"] == sorted(targets)
        assert 0 < applied["trainable_parameters"] < 0.5 * applied["parameters"]
        assert set(applied["trainable_by_part"]) == {"vision_encoder", "projector", "language_model", "heads"}
    else:
        assert applied["lora_layers"] == [] and applied["trainable_parameters"] == applied["parameters"]
    assert (applied["quantized_layers"] > 0) == (recipe.get("quantization") is not None)
    # the parts that train, as the recipe says: the vision encoder frozen, the projector trained whole, the heads
    parts = applied["trainable_by_part"]
    assert (parts["vision_encoder"] == 0) == bool(recipe.get("freeze_vision_tower") or recipe.get("use_lora"))
    assert (parts["heads"] > 0) == (recipe.get("formulation") == "heads")
    if recipe.get("train_projector"):
        model = AutoModelForImageTextToText.from_pretrained(base)
        projector = [model.get_submodule(path) for path in FAMILIES[family].projectors]
        assert parts["projector"] == sum(p.numel() for module in projector for p in module.parameters())
    elif recipe.get("use_lora"):
        assert parts["projector"] == 0
    scorer = LLScore.from_pretrained(out)
    results = scorer.score(sample_images["restored"][:3], sample_images["degraded"][:3])
    assert np.isfinite(results.score).all() and np.isfinite(results.p_hallucination).all()
    # the final model is the best checkpoint (load_best_model_at_end; one validation, at step 2), saved whole
    best = LLScore.from_pretrained(out / "checkpoint-2").score(
        sample_images["restored"][:3], sample_images["degraded"][:3]
    )
    np.testing.assert_allclose(results.score, best.score, atol=1e-5)
    np.testing.assert_allclose(results.p_hallucination, best.p_hallucination, atol=1e-5)
