"""Low-level pretraining of the tiny base: synthetic pool, objective targets, stage 1, and the shipped weights."""

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText

from llscore.modeling import load_processor
from llscore.prompts import LLScoreConfig, PromptContract
from llscore_sim.inputs import make_simulated_inputs
from llscore_sim.mini_bench import TASKS
from llscore_sim.pretraining import (
    PRETRAINING_CONTRACT,
    PretrainingSettings,
    fidelity_pairs,
    pretrain_vision_tower,
    synthetic_pool,
    token_fractions,
)
from llscore_sim.settings import load_config
from llscore_sim.tiny import build_tiny_checkpoint, recorded_shape, save_weights

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "assets" / "tiny-qwen2_5_vl-lowlevel.safetensors"
"""The first low-level base (32-wide tower, 16 tokens per 112 px image): the paper recipe's and the learning test's."""
MAIN_JOB_BASE = REPO / "assets" / "tiny-qwen2_5_vl-lowlevel-v128m1.safetensors"
"""The main job's base (128-wide tower, 64 tokens per 112 px image; docs/training.md, "Capacity")."""
SETTINGS = PretrainingSettings(
    sources=12, restorations_per_source=3, image_size=56, vision_steps=40, vision_batch_size=8
)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return synthetic_pool(tmp_path_factory.mktemp("pool"), SETTINGS)


def test_pool_is_synthetic_complete_and_labelled(pool):
    assert len(pool) == SETTINGS.sources * (2 + SETTINGS.restorations_per_source)
    assert pool.groupby("source").kind.value_counts().unstack().to_dict("list") == {
        "clean": [1] * 12,
        "degraded": [1] * 12,
        "restored": [3] * 12,
    }
    assert all(Path(p).is_file() for p in pool.path) and set(pool.task) <= set(TASKS)
    restored = pool[pool.kind == "restored"]
    assert restored.fidelity.notna().all() and pool[pool.kind != "restored"].fidelity.isna().all()
    assert restored.fidelity.std() > 0.02  # random failure profiles give different fidelities


def test_a_pool_made_with_the_same_settings_is_reused_and_another_is_remade(pool):
    folder = Path(pool.path[0]).parent
    first_image = Path(pool.path[0])
    stamp = first_image.stat().st_mtime_ns
    again = synthetic_pool(folder, SETTINGS)
    pd.testing.assert_frame_equal(again, pool, check_dtype=False)
    assert first_image.stat().st_mtime_ns == stamp  # read back, not drawn again
    other = dataclasses.replace(SETTINGS, seed=SETTINGS.seed + 1)
    remade = synthetic_pool(folder, other)
    assert first_image.stat().st_mtime_ns != stamp and not remade.fidelity.equals(pool.fidelity)
    synthetic_pool(folder, SETTINGS)  # leave the module's pool as the other tests expect it


def test_hallucination_masks_mark_exactly_the_hallucinated_restorations(pool):
    restored = pool[pool.kind == "restored"]
    changed = np.array([np.asarray(Image.open(path)).any() for path in restored.mask_path])
    assert np.array_equal(changed, restored.hallucinated.to_numpy().astype(bool))
    assert changed.any() and not changed.all()
    assert (pool[pool.kind != "restored"].mask_path == "").all()


def test_token_fractions_follow_the_towers_raster_order():
    mask = np.zeros((56, 84), dtype=bool)
    mask[:28, 56:] = True  # the top-right token, whole
    mask[28:42, :28] = True  # the top half of the bottom-left token
    assert token_fractions(mask, 28).tolist() == [0, 0, 1, 0.5, 0, 0]


def test_fidelity_pairs_follow_the_objective_fidelity(pool):
    pairs = fidelity_pairs(pool).to_pandas()
    assert len(pairs) == SETTINGS.sources * 3  # C(3, 2) per source
    fidelity = pool.set_index("path").fidelity
    difference = fidelity[pairs.restored_a].to_numpy() - fidelity[pairs.restored_b].to_numpy()
    assert np.all((pairs.p_a_better > 0.5) == (difference > 0))
    weights = np.asarray(PRETRAINING_CONTRACT.level_weights)
    mean_level = np.stack(pairs.soft_target_a.to_numpy()) @ weights
    assert np.allclose(np.stack(pairs.soft_target_a.to_numpy()).sum(1), 1)
    order = np.argsort(fidelity[pairs.restored_a].to_numpy())
    assert np.all(np.diff(mean_level[order]) >= -1e-6)


def test_pretraining_asks_other_questions_with_the_same_answer_words():
    contract = PromptContract()
    assert not set(PRETRAINING_CONTRACT.quality_questions) & set(contract.quality_questions)
    assert not set(PRETRAINING_CONTRACT.hallucination_questions) & set(contract.hallucination_questions)
    assert PRETRAINING_CONTRACT.answer_words == contract.answer_words


def test_stage_one_teaches_the_tower_an_objective_property(pool, tiny_checkpoints):
    model = AutoModelForImageTextToText.from_pretrained(str(tiny_checkpoints["qwen2_5_vl"]))
    processor = load_processor(tiny_checkpoints["qwen2_5_vl"], LLScoreConfig(prompts=PRETRAINING_CONTRACT))
    before = {k: v.clone() for k, v in model.model.language_model.state_dict().items()}
    torch.manual_seed(0)
    held_out = pretrain_vision_tower(model, processor, pool, SETTINGS)
    assert held_out["luminance"] > 0.8  # the easiest property, learned in 40 steps
    assert {"changed_token_auroc", "hallucinated_image_auroc"} <= set(
        held_out
    )  # the comparison head's checks
    after = model.model.language_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # stage 1 trains the tower only


def test_weights_round_trip_into_the_same_architecture(tmp_path):
    first = build_tiny_checkpoint("qwen2_5_vl", tmp_path / "a", seed=1)
    model = AutoModelForImageTextToText.from_pretrained(str(first))
    path = save_weights(model, tmp_path / "w.safetensors")
    loaded = build_tiny_checkpoint("qwen2_5_vl", tmp_path / "b", seed=2, weights=path)
    again = AutoModelForImageTextToText.from_pretrained(str(loaded))
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )
    with pytest.raises(RuntimeError, match=r"size mismatch|Missing|Unexpected"):
        build_tiny_checkpoint("qwen2_5_vl", tmp_path / "c", width=2, weights=path)


@pytest.mark.parametrize(
    ("weights", "shape"),
    [
        (SHIPPED, {"vision_width": 32, "merge_size": 2}),
        (MAIN_JOB_BASE, {"vision_width": 128, "merge_size": 1}),
    ],
    ids=["first_base", "main_job_base"],
)
def test_shipped_base_matches_its_record_and_loads_in_its_shape(tmp_path, weights, shape):
    """Each shipped base is the file its record hashes, pretrained with the default settings, and the recipe path
    (`make_simulated_inputs`) builds it in the shape its record names: the strict load fails in any other."""
    record = json.loads(weights.with_suffix(".json").read_text())
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == record["sha256"]
    assert record["settings"] == PretrainingSettings().__dict__
    config = load_config(
        REPO / "configs/llscore_tiny.yaml",
        [
            *("--model_name_or_path", str(tmp_path / "base"), "--tiny_base_weights", str(weights)),
            *("--generate_mini_bench", "false", "--output_dir", str(tmp_path / "run")),
        ],
    )
    make_simulated_inputs(config)
    base = tmp_path / "base"
    vision = AutoConfig.from_pretrained(base).vision_config
    assert {"vision_width": vision.hidden_size, "merge_size": vision.spatial_merge_size} == shape
    assert load_processor(base, LLScoreConfig()).image_processor.merge_size == shape["merge_size"]
    random = build_tiny_checkpoint(record["family"], tmp_path / "random", **recorded_shape(weights))
    pretrained = AutoModelForImageTextToText.from_pretrained(str(base)).state_dict()
    initial = AutoModelForImageTextToText.from_pretrained(str(random)).state_dict()
    assert not torch.equal(
        pretrained["model.visual.patch_embed.proj.weight"], initial["model.visual.patch_embed.proj.weight"]
    )
