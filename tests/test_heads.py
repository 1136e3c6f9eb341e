"""The head formulation (llscore/formulations/heads.py): <QUAL>/<HAL> tokens, heads saved with the checkpoint, the paper's
parameter groups, the rank-aware joint loss, and a head checkpoint through eval.py and the reward."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_eval import run_eval
from test_training import assert_the_loss_falls
from transformers import AutoTokenizer

from llscore import LLScore, LLScoreReward
from llscore.config import load_config
from llscore.data.build import build_dataset
from llscore.data.prepared import load_prepared
from llscore.errors import CheckpointError, ConfigError
from llscore.evaluation import load_eval_data
from llscore.families import FAMILIES
from llscore.formulations.heads import HEADS_FILE, head_token_ids, heads_of
from llscore.losses import pair_ranking_bce
from llscore.modeling import LoraSettings, ModelConfig, load_for_training, save_checkpoint
from llscore.prompts import LLScoreConfig, ResolutionRule
from llscore.trainer import LLScoreTrainer

RESOLUTION = ResolutionRule(3136, 12544)
PAPER_GROUPS = {"formulation": "heads", "freeze_vision_tower": True, "train_projector": True}


def head_model(base: Path, use_lora: bool, **settings):
    """A tiny base made ready to train with heads (the paper's groups unless `settings` say otherwise), every
    trainable weight moved off its initial value so that a checkpoint that lost any of them scores differently."""
    config = LLScoreConfig(resolution=RESOLUTION, base_model=str(base), formulation="heads")
    model_config = ModelConfig(model_name_or_path=str(base), **{**PAPER_GROUPS, **settings})
    model, processor = load_for_training(model_config, LoraSettings(use_lora=use_lora, lora_r=8), config)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
    return model.eval(), processor, config


@pytest.fixture(scope="module")
def prepared(mini_bench, tmp_path_factory) -> Path:
    return build_dataset(mini_bench, tmp_path_factory.mktemp("prep") / "prepared")


@pytest.fixture(scope="module")
def head_checkpoint(tiny_checkpoints, tmp_path_factory) -> Path:
    """A LoRA head checkpoint of Qwen3-VL (deepstack mergers in its projector) with the paper's groups."""
    model, processor, config = head_model(tiny_checkpoints["qwen3_vl"], use_lora=True)
    return save_checkpoint(model, processor, config, tmp_path_factory.mktemp("heads") / "ckpt")


@pytest.mark.parametrize(("family", "use_lora"), [("qwen3_vl", True), ("qwen2_5_vl", False)])
def test_a_head_checkpoint_round_trips_to_identical_scores(
    tiny_checkpoints, sample_images, tmp_path, family, use_lora
):
    model, processor, config = head_model(tiny_checkpoints[family], use_lora)
    restored, degraded = sample_images["restored"][:3], sample_images["degraded"][:3]
    before = LLScore(model, processor, config).score(restored, degraded)
    out = save_checkpoint(model, processor, config, tmp_path / "ckpt")
    assert json.loads((out / "llscore_config.json").read_text())["formulation"] == "heads"
    assert (out / HEADS_FILE).is_file()
    loaded = LLScore.from_pretrained(out)
    after = loaded.score(restored, degraded)
    np.testing.assert_allclose(after.score, before.score, atol=1e-5)
    np.testing.assert_allclose(after.p_hallucination, before.p_hallucination, atol=1e-5)
    assert np.ptp(after.score) > 1e-3 and after.std is None and after.distribution is None
    assert np.all((after.score > 1) & (after.score < 5))  # low + (high - low)·σ(s) on the level scale
    np.testing.assert_allclose(after.score, 1 + 4 / (1 + np.exp(-after.quality_logit)), atol=1e-5)

    # the heads file is what the scores come from: other heads, other scores
    state = load_file(str(out / HEADS_FILE))
    save_file({key: value * 2 for key, value in state.items()}, str(out / HEADS_FILE))
    assert np.abs(LLScore.from_pretrained(out).score(restored, degraded).score - after.score).max() > 1e-4


def test_the_head_tokens_are_single_special_tokens_saved_with_the_tokenizer(
    head_checkpoint, tiny_checkpoints
):
    scorer = LLScore.from_pretrained(head_checkpoint)
    tokenizer = scorer.processor.tokenizer
    contract = scorer.config.prompts
    ids = head_token_ids(tokenizer, contract)
    assert len(set(ids)) == 2 and all(tokenizer.added_tokens_decoder[i].special for i in ids)
    saved = json.loads((head_checkpoint / "tokenizer.json").read_text())["added_tokens"]
    assert {t["content"]: t["special"] for t in saved if t["content"] in contract.head_tokens} == {
        "<QUAL>": True,
        "<HAL>": True,
    }
    # each appears once in the scored prompt, inside the assistant's stem
    text = scorer.backend.prepare.builder.texts("joint", [True])[0]
    assert text.count("<QUAL>") == 1 and text.count("<HAL>") == 1 and text.rstrip().endswith("<HAL>")
    # the base's tokenizer did not have them: they were added, not found
    base_vocab = AutoTokenizer.from_pretrained(tiny_checkpoints["qwen3_vl"]).get_vocab()
    assert not set(contract.head_tokens) & set(base_vocab)


def test_the_paper_groups_freeze_the_encoder_and_train_the_projector_heads_and_lora(tiny_checkpoints):
    family = FAMILIES["qwen3_vl"]
    model, _, _ = head_model(tiny_checkpoints["qwen3_vl"], use_lora=True)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    projector = [n for n in trainable if family.is_projector_parameter(n)]
    assert projector and all("modules_to_save" in n for n in projector)  # peft trains a whole copy
    deepstack = len(model.get_base_model().model.visual.deepstack_merger_list)
    assert {n.split("deepstack_merger_list.")[1][0] for n in projector if "deepstack" in n} == {
        str(i) for i in range(deepstack)
    }
    encoder = [n for n in trainable if family.is_vision_parameter(n) and not family.is_projector_parameter(n)]
    assert encoder == []
    heads = {n for n in trainable if "llscore_heads." in n}
    assert len(heads) == 8  # two MLPs, two linear layers each
    rest = trainable - set(projector) - heads
    assert rest and all("lora_" in n or "trainable_tokens" in n for n in rest)
    assert any("trainable_tokens" in n for n in rest)  # the <QUAL>/<HAL> embedding rows

    full, _, _ = head_model(tiny_checkpoints["qwen2_5_vl"], use_lora=False)
    frozen = {name for name, param in full.named_parameters() if not param.requires_grad}
    assert frozen and all("visual." in n and "merger." not in n for n in frozen)
    assert all(p.requires_grad for n, p in full.named_parameters() if "merger." in n)


def learning_rates(
    model, processor, config, folder, *overrides: str
) -> tuple[LLScoreTrainer, dict[str, float]]:
    """The trainer for `overrides` and the learning rate its optimizer gives each trainable parameter."""
    args = load_config(
        None, ["--output_dir", str(folder), "--report_to", "none", "--learning_rate", "1e-3", *overrides]
    ).training
    trainer = LLScoreTrainer(model=model, args=args, processing_class=processor, llscore_config=config)
    optimizer = trainer.create_optimizer()
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == sum(
        p.numel() for group in optimizer.param_groups for p in group["params"]
    )
    return trainer, {name: rate[id(param)] for name, param in model.named_parameters() if param.requires_grad}


def test_the_projector_trains_at_its_own_learning_rate(tiny_checkpoints, tmp_path):
    model, processor, config = head_model(tiny_checkpoints["qwen2_5_vl"], use_lora=True)
    trainer, names = learning_rates(model, processor, config, tmp_path, "--projector_learning_rate", "3e-5")
    assert {lr for n, lr in names.items() if "merger." in n} == {3e-5}
    assert {lr for n, lr in names.items() if "merger." not in n} == {1e-3}
    parts = trainer.applied()["trainable_by_part"]
    assert (
        parts["vision_encoder"] == 0 and min(parts["projector"], parts["heads"], parts["language_model"]) > 0
    )


def test_ranking_term_meets_ties_with_equal_scores_and_orders_clear_votes():
    gap = torch.zeros(3, requires_grad=True)
    pair_ranking_bce(gap, torch.tensor([0.5, 0.5, 0.5])).backward()
    assert gap.grad.abs().max() < 1e-7  # a tie: equal scores are the optimum
    gap = torch.zeros(2, requires_grad=True)
    pair_ranking_bce(gap, torch.tensor([0.9, 0.1])).backward()
    assert gap.grad[0] < 0 < gap.grad[1]  # descending moves A up for 0.9, down for 0.1
    low = pair_ranking_bce(torch.tensor([2.0]), torch.tensor([0.9]))
    assert low < pair_ranking_bce(torch.tensor([-2.0]), torch.tensor([0.9]))


def test_the_joint_loss_falls_on_a_fixed_batch_in_one_forward_per_image(tiny_checkpoints, prepared, tmp_path):
    model, processor, config = head_model(tiny_checkpoints["qwen2_5_vl"], use_lora=True)
    model.train()
    args = load_config(
        None, ["--output_dir", str(tmp_path), "--report_to", "none", "--score_mse", "0.5"]
    ).training
    trainer = LLScoreTrainer(model=model, args=args, processing_class=processor, llscore_config=config)
    examples = load_prepared(prepared).pair_examples("train")
    batch = trainer.data_collator([examples[i] for i in range(0, 64, 8)])
    assert set(batch) == {"joint_inputs", "soft_target", "p_human", "hallucination_label"}
    assert batch["joint_inputs"]["input_ids"].shape[0] == 16  # A and B of 8 pairs, both answers in one pass
    torch.manual_seed(0)
    assert_the_loss_falls(trainer, batch, {"pair_ranking", "score_mse", "hallucination_bce"}, 3e-3)


def test_a_head_checkpoint_without_its_heads_is_one_line(head_checkpoint, tmp_path):
    import shutil

    broken = Path(shutil.copytree(head_checkpoint, tmp_path / "ckpt"))
    (broken / HEADS_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"says 'heads' but it has no {HEADS_FILE}"):
        LLScore.from_pretrained(broken)
    (broken / HEADS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not LL-Score heads"):
        LLScore.from_pretrained(broken)
    config = json.loads((broken / "llscore_config.json").read_text())
    (broken / "llscore_config.json").write_text(json.dumps({**config, "formulation": "logits"}))
    with pytest.raises(CheckpointError, match="formulation must be one of"):
        LLScore.from_pretrained(broken)


def test_a_head_checkpoint_runs_through_eval_and_the_reward(
    head_checkpoint, prepared, sample_images, tmp_path
):
    out = tmp_path / "eval"
    common = ["--data", str(prepared), "--baselines", "psnr", "--cache-dir", str(tmp_path / "cache")]
    assert run_eval("--ckpt", str(head_checkpoint), "--out", str(out), "--bootstrap", "20", *common) == 0
    scorer = LLScore.from_pretrained(head_checkpoint)
    scores = pd.read_csv(out / "scores.csv")  # what eval.py scored is the head checkpoint's own scoring
    images = load_eval_data(prepared, "test").images.set_index("image_id").loc[scores["image_id"][:6]]
    direct = scorer.score(images["restored"].tolist(), images["degraded"].tolist())
    np.testing.assert_allclose(scores["llscore"].to_numpy()[:6], direct.score, atol=1e-5)
    np.testing.assert_allclose(scores["p_hallucination"].to_numpy()[:6], direct.p_hallucination, atol=1e-5)
    assert scores["llscore_std"].isna().all()  # a head has no level distribution to spread
    assert "llscore" in (out / "report.md").read_text()

    reward = LLScoreReward(scorer, hallucination_weight=0.5, batch_size=2)
    restored, degraded = sample_images["restored"], sample_images["degraded"]
    results = scorer.score(restored, degraded)
    np.testing.assert_allclose(
        reward(restored, degraded).numpy(), results.score - 0.5 * results.p_hallucination, atol=1e-5
    )
    pixels = torch.rand(2, 3, 64, 64, requires_grad=True)
    values = reward.differentiable(pixels, torch.rand(2, 3, 64, 64))
    values.sum().backward()
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in heads_of(scorer.model).parameters())


def test_the_release_jsonl_format_reads_a_head_checkpoint(head_checkpoint, sample_images, tmp_path):
    """`llscore score --jsonl` writes the paper's two fields from a head checkpoint, with its raw quality output
    and no level distribution."""
    from test_jsonl import lines_of, write_jsonl

    from llscore.cli import main

    folder = tmp_path / "release"
    for kind in ("restored", "degraded"):
        (folder / kind).mkdir(parents=True)
        for path in sample_images[kind]:
            (folder / kind / path.name).write_bytes(path.read_bytes())
    write_jsonl(folder / "in.jsonl", lines_of(sample_images, folder))
    out = folder / "out.jsonl"
    assert (
        main(
            ["score", "--ckpt", str(head_checkpoint), "--jsonl", str(folder / "in.jsonl"), "--out", str(out)]
        )
        == 0
    )
    scored = [json.loads(text) for text in out.read_text().splitlines()]
    expected = LLScore.from_pretrained(head_checkpoint).score(
        sample_images["restored"][:3], sample_images["degraded"][:3]
    )
    np.testing.assert_allclose([line["quality_score"] for line in scored], expected.score, atol=1e-5)
    np.testing.assert_allclose(
        [line["hallucination_prob"] for line in scored], expected.p_hallucination, atol=1e-5
    )
    np.testing.assert_allclose([line["quality_logit"] for line in scored], expected.quality_logit, atol=1e-5)
    assert not any(key.startswith("p_") or key == "std" for line in scored for key in line)


def test_spare_embedding_rows_are_used_in_place_and_restored_from_an_adapter(
    tiny_checkpoints, sample_images, tmp_path
):
    """Real Qwen checkpoints have more embedding rows than tokens (152,064 > 151,665): the head tokens take spare
    rows without growing the embeddings, and an adapter's trained rows go back onto the ungrown base."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base = tmp_path / "spare"
    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoints["qwen2_5_vl"])
    processor = AutoProcessor.from_pretrained(tiny_checkpoints["qwen2_5_vl"])
    rows = len(processor.tokenizer) + 64
    model.resize_token_embeddings(rows, mean_resizing=False)
    model.save_pretrained(base)
    processor.save_pretrained(base)
    trained, processor, config = head_model(base, use_lora=True)
    assert trained.get_base_model().get_input_embeddings().weight.shape[0] == rows  # not grown
    restored, degraded = sample_images["restored"][:3], sample_images["degraded"][:3]
    before = LLScore(trained, processor, config).score(restored, degraded)
    loaded = LLScore.from_pretrained(save_checkpoint(trained, processor, config, tmp_path / "ckpt"))
    np.testing.assert_allclose(loaded.score(restored, degraded).score, before.score, atol=1e-5)
    assert loaded.model.get_base_model().get_input_embeddings().weight.shape[0] == rows


@pytest.mark.parametrize("use_lora", [True, False], ids=["lora", "full"])
def test_a_checkpoint_brings_back_the_heads_it_saved(tiny_checkpoints, tmp_path, use_lora):
    """Resuming and the best-model reload read the heads' own file (neither Trainer nor peft knows it); training
    on from a head checkpoint keeps its heads rather than drawing new ones."""
    model, processor, config = head_model(tiny_checkpoints["qwen2_5_vl"], use_lora)
    args = load_config(None, ["--output_dir", str(tmp_path / "run"), "--report_to", "none"]).training
    trainer = LLScoreTrainer(model=model, args=args, processing_class=processor, llscore_config=config)
    trainer.save_model(str(tmp_path / "checkpoint-1"))
    saved = {key: value.clone() for key, value in heads_of(model).state_dict().items()}
    with torch.no_grad():
        for param in heads_of(model).parameters():
            param.add_(1.0)
    trainer._load_from_checkpoint(str(tmp_path / "checkpoint-1"))
    for key, value in heads_of(model).state_dict().items():
        torch.testing.assert_close(value, saved[key])
    if not use_lora:
        again, _ = load_for_training(
            ModelConfig(model_name_or_path=str(tmp_path / "checkpoint-1"), formulation="heads"),
            LoraSettings(),
            config,
        )
        for key, value in heads_of(again).state_dict().items():
            torch.testing.assert_close(value, saved[key])


def test_the_projector_follows_the_vision_rate_unless_given_its_own(tiny_checkpoints, tmp_path):
    """configs/llscore_qwen_full.yaml's `vision_lr_scale` still covers the merger, as before the projector group."""
    model, processor, config = head_model(
        tiny_checkpoints["qwen2_5_vl"], use_lora=False, freeze_vision_tower=False
    )
    _, names = learning_rates(model, processor, config, tmp_path, "--vision_lr_scale", "0.1")
    assert {round(lr, 12) for n, lr in names.items() if "visual." in n} == {1e-4}
    assert {lr for n, lr in names.items() if "visual." not in n} == {1e-3}


def test_settings_that_would_train_something_twice_or_never_are_handled(tiny_checkpoints, tmp_path):
    config = LLScoreConfig(resolution=RESOLUTION, formulation="heads")
    with pytest.raises(ConfigError, match="choose one"):
        load_for_training(
            ModelConfig(model_name_or_path=str(tiny_checkpoints["qwen2_5_vl"]), **PAPER_GROUPS),
            LoraSettings(use_lora=True, lora_include_vision=True),
            config,
        )
    model, processor, config = head_model(tiny_checkpoints["qwen2_5_vl"], use_lora=True)
    args = load_config(
        None, ["--output_dir", str(tmp_path), "--report_to", "none", "--hallucination_bce", "0"]
    ).training
    LLScoreTrainer(model=model, args=args, processing_class=processor, llscore_config=config)
    assert not any(p.requires_grad for p in heads_of(model).hallucination.parameters())
    assert all(p.requires_grad for p in heads_of(model).quality.parameters())


def test_a_level_checkpoint_file_holds_no_head_fields():
    """Installs from before the head formulation refuse unknown contract keys: a level checkpoint must not carry
    the head fields; a head checkpoint carries them (and such installs refuse it)."""
    levels = LLScoreConfig().to_dict()
    assert not {"joint_questions", "quality_token", "hallucination_token", "joint_stem"} & set(
        levels["prompts"]
    )
    assert LLScoreConfig.from_dict(levels) == LLScoreConfig()
    heads = LLScoreConfig(formulation="heads")
    assert heads.to_dict()["prompts"]["quality_token"] == "<QUAL>"
    assert LLScoreConfig.from_dict(heads.to_dict()) == heads


def test_a_checkpoint_is_not_saved_over_another_and_mixed_formulations_are_named(
    head_checkpoint, llscore_checkpoints, sample_images, tmp_path, capsys
):
    """Saving a level checkpoint into a head checkpoint's folder mixed the two (its adapter and heads stayed);
    loading that, or a head checkpoint whose contract says 'levels', was peft's IndexError."""
    import re
    import shutil

    from llscore.cli import main

    target = Path(shutil.copytree(head_checkpoint, tmp_path / "heads"))
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    levels = LLScore.from_pretrained(llscore_checkpoints["qwen3_vl"])
    with pytest.raises(
        CheckpointError,
        match=rf"^{re.escape(str(target))}: holds a checkpoint already \(.*\); .*overwrite=True",
    ):
        levels.save_pretrained(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    image = sample_images["restored"][0]
    levels.save_pretrained(target, overwrite=True)  # this checkpoint's files, and no other layout's
    assert not (target / HEADS_FILE).exists() and not (target / "adapter_config.json").exists()
    np.testing.assert_allclose(LLScore.from_pretrained(target).score(image).score, levels.score(image).score)

    relabelled = Path(shutil.copytree(head_checkpoint, tmp_path / "relabelled"))
    config = json.loads((relabelled / "llscore_config.json").read_text())
    (relabelled / "llscore_config.json").write_text(json.dumps({**config, "formulation": "levels"}))
    mismatch = f"its llscore_config.json says 'levels' but it holds {HEADS_FILE}"
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(relabelled))}: {mismatch}"):
        LLScore.from_pretrained(relabelled)
    command = ["score", "--ckpt", str(relabelled), "--restored", str(image), "--out", str(tmp_path / "s.csv")]
    capsys.readouterr()
    assert main(command) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and mismatch in error[0]


def test_loading_a_head_adapter_shows_no_future_warning(head_checkpoint):
    """peft reads transformers' deprecated `is_gradient_checkpointing` alias when it wraps a model: a
    FutureWarning on every load of an adapter that the user can do nothing about."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LLScore.from_pretrained(head_checkpoint)
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []
