"""The scoring contract on tiny checkpoints of every family: one pass, batched, the right token position."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAMILIES, FIXTURES, shared_or_skip
from PIL import Image
from scripts import accelerate_launch, folder_held_by

from llscore import LLScore
from llscore.errors import CheckpointError, ImageError
from llscore.families import family_of
from llscore.modeling import LoraSettings, write_llscore_config
from llscore.prompts import LLScoreConfig, PromptContract, ResolutionRule
from llscore.scoring import InputBuilder, answer_logits, answers, check_answer_words, joint_inputs


@pytest.fixture(scope="module", params=FAMILIES)
def scorer(request, llscore_checkpoints):
    return LLScore.from_pretrained(llscore_checkpoints[request.param])


def test_batched_equals_one_at_a_time_and_score_is_expected_level(scorer, sample_images):
    restored, degraded = sample_images["restored"], sample_images["degraded"]
    batched = scorer.score(restored, degraded, batch_size=5)
    single = [scorer.score([r], [d]) for r, d in zip(restored, degraded, strict=True)]
    np.testing.assert_allclose(batched.score, [s.score[0] for s in single], atol=1e-5)
    np.testing.assert_allclose(batched.p_hallucination, [s.p_hallucination[0] for s in single], atol=1e-5)
    weights = np.array(scorer.config.prompts.level_weights)
    np.testing.assert_allclose(batched.score, batched.distribution @ weights, atol=1e-5)
    np.testing.assert_allclose(batched.distribution.sum(axis=1), 1, atol=1e-5)
    assert ((batched.p_hallucination > 0) & (batched.p_hallucination < 1)).all()
    np.testing.assert_allclose(scorer.score(restored, degraded, batch_size=2).score, batched.score, atol=1e-5)
    assert np.ptp(batched.score) > 0, "different images must get different scores"


def test_preparing_batches_in_worker_processes_changes_nothing(scorer, sample_images):
    """DataLoader workers decode and preprocess the next batches during the forward pass: same scores, order."""
    restored, degraded = sample_images["restored"], sample_images["degraded"]
    inline = scorer.score(restored, degraded, batch_size=2, workers=0)
    for workers in (1, 3):
        prepared_ahead = scorer.score(restored, degraded, batch_size=2, workers=workers)
        np.testing.assert_array_equal(prepared_ahead.score, inline.score)
        np.testing.assert_array_equal(prepared_ahead.p_hallucination, inline.p_hallucination)
        assert prepared_ahead.names == inline.names
    assert np.ptp(inline.score) > 0  # the order is visible: the images score differently


def test_workers_start_once_and_take_opened_but_unread_images(scorer, sample_images, monkeypatch):
    """One DataLoader pass per call (a progress bar that iterated it twice started every worker twice), and
    `Image.open` objects, whose file a forked worker would share, score the same in and out of workers."""
    from torch.utils.data import DataLoader

    passes = []
    iterate = DataLoader.__iter__
    monkeypatch.setattr(DataLoader, "__iter__", lambda loader: passes.append(1) or iterate(loader))
    restored, degraded = sample_images["restored"], sample_images["degraded"]
    expected = scorer.score(restored, degraded, batch_size=2, workers=1, progress=True)
    assert len(passes) == 1
    opened = [Image.open(path) for path in restored]
    for workers in (1, 0, 1):
        np.testing.assert_array_equal(
            scorer.score(opened, degraded, batch_size=2, workers=workers).score, expected.score
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_asking_several_questions_processes_each_image_once_into_the_processors_own_inputs(
    family, sample_images, monkeypatch
):
    """`InputBuilder.ask` processes each distinct image once for every question of a batch, and its inputs equal
    the real processor's `processor(text=..., images=...)` for each question: tokens, mask, the image-token
    types, pixels and grids (the real Qwen-VL processor files of each family)."""
    import random

    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(shared_or_skip(FIXTURES / f"{family}_processor"))
    config = LLScoreConfig(resolution=ResolutionRule(3136, 12544))
    builder = InputBuilder(processor, config)
    restored = [Image.open(p).convert("RGB") for p in sample_images["restored"][:4]]
    degraded = [
        Image.open(p).convert("RGB") for p in sample_images["degraded"][:2]
    ] * 2  # a pair's input twice
    processed = []
    original = type(processor.image_processor).__call__
    monkeypatch.setattr(
        type(processor.image_processor),
        "__call__",
        lambda self, images, *a, **k: processed.append(len(images)) or original(self, images, *a, **k),
    )
    asked = builder.ask({"quality": random.Random(1), "hallucination": random.Random(2)}, restored, degraded)
    assert processed == [6]  # 4 restorations and 2 degraded inputs, for both questions
    for task, seed in (("quality", 1), ("hallucination", 2)):
        texts = builder.texts(task, [True] * 4, random.Random(seed))
        images = [[d, r] for r, d in zip(restored, degraded, strict=True)]
        expected = processor(
            text=texts,
            images=images,
            padding=True,
            padding_side="left",
            return_tensors="pt",
            images_kwargs={"size": builder.family.image_size(config.resolution)},
        )
        assert set(asked[task]) == set(expected)
        length = expected["input_ids"].shape[
            1
        ]  # asked together, the questions share one (left-padded) length
        assert not asked[task]["attention_mask"][:, :-length].any()
        for key, value in expected.items():
            ours = (
                asked[task][key][:, -length:]
                if key in ("input_ids", "attention_mask", "mm_token_type_ids")
                else asked[task][key]
            )
            assert torch.equal(ours, value), (task, key)
    paths = builder.ask({"quality": None}, sample_images["restored"][:2], [sample_images["degraded"][0]] * 2)
    assert processed[-1] == 3  # the same path is one image too
    alone = builder("quality", sample_images["restored"][:2], [sample_images["degraded"][0]] * 2)
    assert all(torch.equal(paths["quality"][key], value) for key, value in alone.items())


def test_the_questions_are_one_forward_pass_with_each_image_encoded_once_and_the_numbers_of_separate_ones(
    scorer, sample_images
):
    """A training step's two questions show the same images, a pair's degraded input beside both restorations:
    `answers` asks them in one forward pass with the vision tower run on each distinct image once, and the
    logits and every gradient equal those of separate forwards that encode each image where it appears."""
    restored = sample_images["restored"][:4]  # as PairCollator asks: two pairs' A, then their B
    degraded = sample_images["degraded"][:2] * 2
    builder = InputBuilder(scorer.processor, scorer.config)
    asked = builder.ask({"quality": None, "hallucination": None}, restored, degraded)
    questions = [asked["quality"], asked["hallucination"]]
    model = scorer.model
    tower = family_of(model.config).vision_tower_of(model)
    encoded = []
    hook = tower.register_forward_hook(
        lambda module, args, kwargs, out: encoded.append(len(kwargs["grid_thw"])), with_kwargs=True
    )

    def logits_and_grads(together: bool):
        model.zero_grad()
        logits = answers(model, questions) if together else [answer_logits(model, q) for q in questions]
        sum(question.logsumexp(-1).sum() for question in logits).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return torch.cat(logits), grads

    try:
        with torch.enable_grad():
            apart_logits, apart_grads = logits_and_grads(together=False)
            assert encoded == [8, 8]  # each question encodes its 4 restorations and 4 degraded inputs
            encoded.clear()
            joint_logits, joint_grads = logits_and_grads(together=True)
    finally:
        hook.remove()
        model.zero_grad()
    assert encoded == [6]  # 4 distinct restorations and 2 distinct degraded inputs, for both questions
    torch.testing.assert_close(joint_logits, apart_logits, atol=1e-5, rtol=1e-4)
    assert joint_grads.keys() == apart_grads.keys()
    assert any(family_of(model.config).is_vision_parameter(n) for n in joint_grads)
    for name, grad in apart_grads.items():
        torch.testing.assert_close(joint_grads[name], grad, atol=1e-5, rtol=1e-3, msg=name)
    moving = [{**q, "pixel_values": q["pixel_values"].clone().requires_grad_()} for q in questions]
    assert "pixel_values" in joint_inputs(model, moving)  # the reward's pixels: batched as they are
    with pytest.raises(ValueError, match="tokenized together"):
        joint_inputs(model, [builder("quality", restored[:1]), builder("hallucination", restored, degraded)])


def test_no_reference_mode_and_records(scorer, sample_images):
    results = scorer.score(sample_images["restored"][:2])
    frame = results.to_dataframe()
    assert list(frame.columns) == [
        "image",
        "score",
        "std",
        "p_excellent",
        "p_good",
        "p_fair",
        "p_poor",
        "p_bad",
        "p_hallucination",
    ]
    assert frame["image"].tolist() == [str(p) for p in sample_images["restored"][:2]]
    with_reference = scorer.score(sample_images["restored"][:2], sample_images["degraded"][:2])
    assert not np.allclose(results.score, with_reference.score), "the degraded input must change the prompt"


def test_compare_is_thurstone_of_the_two_distributions(scorer, sample_images):
    a, b, d = sample_images["restored"][:3], sample_images["restored"][1:4], sample_images["degraded"][:3]
    result = scorer.compare(a, b, d)
    swapped = scorer.compare(b, a, d)
    np.testing.assert_allclose(result.p_a_better + swapped.p_a_better, 1, atol=1e-5)
    assert result.p_a_better[1] != 0.5 or result.a.score[1] == result.b.score[1]
    higher = result.a.score > result.b.score
    assert ((result.p_a_better > 0.5) == higher).all()


def test_compare_needs_as_many_a_as_b(llscore_checkpoints, sample_images):
    """Three A against one B would be three probabilities against the one B (and records that fail in zip)."""
    scorer = LLScore.from_pretrained(llscore_checkpoints["qwen2_vl"])
    a, b = sample_images["restored"][:3], sample_images["restored"][3:4]
    with pytest.raises(ValueError, match=r"^a has 3 images but b has 1; compare pairs them one to one$"):
        scorer.compare(a, b)
    with pytest.raises(ValueError, match=r"^3 restored images but 2 degraded inputs$"):
        scorer.compare(a, a, sample_images["degraded"][:2])


@pytest.fixture(scope="module")
def real_tokenizer_checkpoint(tmp_path_factory):
    from llscore_sim.tiny import build_tiny_checkpoint

    fixture = shared_or_skip(FIXTURES / "qwen2_5_vl_processor")
    path = build_tiny_checkpoint(
        "qwen2_5_vl", tmp_path_factory.mktemp("real") / "ckpt", tokenizer_from=fixture
    )
    write_llscore_config(LLScoreConfig(resolution=ResolutionRule(3136, 12544)), path)
    return path


def test_real_tokenizer_reads_the_logits_right_after_the_answer_stem(
    real_tokenizer_checkpoint, sample_images
):
    scorer = LLScore.from_pretrained(real_tokenizer_checkpoint)
    tokenizer = scorer.processor.tokenizer
    ids = check_answer_words(tokenizer, scorer.config.prompts)
    assert len(tokenizer) > 150_000 and len(set(ids.values())) == 7
    restored, degraded = sample_images["restored"][:3], sample_images["degraded"][:3]
    for task in ("quality", "hallucination"):
        inputs = scorer.backend.builder(task, restored, degraded)
        assert (inputs["attention_mask"][:, -1] == 1).all(), "left padding puts every prompt's end last"
        stem = scorer.config.prompts.stem(task)
        for row in inputs["input_ids"]:
            assert tokenizer.decode(row, skip_special_tokens=False).endswith(f"<|im_start|>assistant\n{stem}")
        with torch.no_grad():
            read = answer_logits(scorer.model, inputs)
            full = scorer.model(**inputs).logits[:, -1, :]
            alone = scorer.model(**scorer.backend.builder(task, restored[:1], degraded[:1])).logits[0, -1, :]
        torch.testing.assert_close(read, full, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(read[0], alone, atol=1e-4, rtol=1e-4)


def test_save_reload_gives_identical_scores(llscore_checkpoints, sample_images, tmp_path):
    scorer = LLScore.from_pretrained(llscore_checkpoints["qwen2_5_vl"])
    saved = scorer.save_pretrained(tmp_path / "saved")
    assert (saved / "model.safetensors").is_file() and not list(saved.glob("*.bin"))
    assert json.loads((saved / "llscore_config.json").read_text())["resolution"]["max_pixels"] == 12544
    reloaded = LLScore.from_pretrained(saved)
    a = scorer.score(sample_images["restored"], sample_images["degraded"])
    b = reloaded.score(sample_images["restored"], sample_images["degraded"])
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.p_hallucination, b.p_hallucination)


def test_a_saved_checkpoints_weights_have_the_mode_of_its_other_files(
    llscore_checkpoints, tiny_checkpoints, tmp_path
):
    """safetensors writes owner-only files (0o600): others sharing the folder could read the configs, not the
    weights. Every file gets the mode the umask gives (here 0o640)."""
    import os
    import stat

    from test_heads import head_model

    from llscore.modeling import save_checkpoint

    umask = os.umask(0o027)
    try:
        saved = [
            LLScore.from_pretrained(llscore_checkpoints["qwen2_5_vl"]).save_pretrained(tmp_path / "levels")
        ]
        model, processor, config = head_model(tiny_checkpoints["qwen2_5_vl"], use_lora=False)
        saved.append(save_checkpoint(model, processor, config, tmp_path / "heads"))
    finally:
        os.umask(umask)
    modes = {
        f"{p.parent.name}/{p.name}": oct(stat.S_IMODE(p.stat().st_mode)) for d in saved for p in d.iterdir()
    }
    assert {"levels/model.safetensors", "heads/llscore_heads.safetensors", "heads/config.json"} <= set(modes)
    assert {name: mode for name, mode in modes.items() if mode != "0o640"} == {}


def test_lora_adapter_and_merged_model_score_the_same(llscore_checkpoints, sample_images, tmp_path):
    from peft import get_peft_model

    base = llscore_checkpoints["qwen2_5_vl"]
    scorer = LLScore.from_pretrained(base)
    peft_config = LoraSettings(use_lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0).peft_config(
        family_of(scorer.model.config)
    )
    peft_config.init_lora_weights = False
    torch.manual_seed(0)
    scorer.model = get_peft_model(scorer.model, peft_config)
    names = [n for n, p in scorer.model.named_parameters() if p.requires_grad]
    assert names and all("language_model" in n and "lora_" in n for n in names)
    adapter_dir = scorer.save_pretrained(tmp_path / "adapter")
    assert (adapter_dir / "adapter_model.safetensors").is_file()
    adapter = LLScore.from_pretrained(adapter_dir)
    base_scores = (
        LLScore.from_pretrained(base).score(sample_images["restored"], sample_images["degraded"]).score
    )
    adapter_scores = adapter.score(sample_images["restored"], sample_images["degraded"]).score
    assert np.abs(adapter_scores - base_scores).max() > 1e-3, "the adapter must change the scores"
    adapter.model = adapter.model.merge_and_unload()
    merged_dir = adapter.save_pretrained(tmp_path / "merged")
    assert not (merged_dir / "adapter_config.json").exists()
    merged_scores = LLScore.from_pretrained(merged_dir).score(
        sample_images["restored"], sample_images["degraded"]
    )
    np.testing.assert_allclose(merged_scores.score, adapter_scores, atol=1e-4)


def test_gradients_reach_lora_parameters_from_the_score(llscore_checkpoints, sample_images):
    from llscore.modeling import ModelConfig, load_for_training

    config = LLScoreConfig(resolution=ResolutionRule(3136, 12544))
    model, processor = load_for_training(
        ModelConfig(model_name_or_path=str(llscore_checkpoints["qwen2_vl"])),
        LoraSettings(use_lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0),
        config,
    )
    scorer = LLScore(model, processor, config)
    scorer.read(sample_images["restored"][:2], sample_images["degraded"][:2], hallucination=False)[
        0
    ].score.sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all("lora_" in n for n in grads)
    assert any(
        g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_A" in n or "lora_B" in n
    )


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_qlora_loads_and_scores_on_cpu(llscore_checkpoints, sample_images, bits):
    from llscore.modeling import ModelConfig, load_for_training

    config = LLScoreConfig(resolution=ResolutionRule(3136, 12544))
    try:
        model, processor = load_for_training(
            ModelConfig(model_name_or_path=str(llscore_checkpoints["qwen2_5_vl"]), quantization=bits),
            LoraSettings(use_lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0),
            config,
        )
    except (ImportError, RuntimeError) as err:
        pytest.skip(f"bitsandbytes {bits} on CPU: {err}")
    quantized = [n for n, m in model.named_modules() if type(m).__module__.startswith("bitsandbytes")]
    assert quantized and not any("visual" in n for n in quantized), "vision tower stays in full precision"
    scorer = LLScore(model, processor, config)
    reading = scorer.read(sample_images["restored"][:2], sample_images["degraded"][:2], hallucination=False)[
        0
    ]
    assert torch.isfinite(reading.score).all() and ((reading.score >= 1) & (reading.score <= 5)).all()
    reading.score.sum().backward()
    assert any(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)


@pytest.mark.slow
def test_cli_scores_a_folder_and_names_a_corrupt_file(llscore_checkpoints, sample_images, tmp_path):
    restored_dir = sample_images["restored"][0].parent
    out = tmp_path / "scores.csv"
    command = [sys.executable, "-m", "llscore.cli", "score", "--ckpt", str(llscore_checkpoints["qwen2_vl"])]
    run = subprocess.run(
        [
            *command,
            "--restored",
            str(restored_dir),
            "--degraded",
            str(sample_images["degraded"][0].parent),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    frame = pd.read_csv(out)
    assert len(frame) == 5 and frame["score"].between(1, 5).all()
    assert [Path(p).name for p in frame["degraded"]] == [p.name for p in sample_images["restored"]]
    expected = LLScore.from_pretrained(llscore_checkpoints["qwen2_vl"]).score(
        sample_images["restored"], sample_images["degraded"]
    )
    np.testing.assert_allclose(frame["score"], expected.score, atol=1e-5)

    corrupt = tmp_path / "bad"
    corrupt.mkdir()
    (corrupt / "broken.png").write_bytes(b"\x89PNG not really")
    run = subprocess.run(
        [*command, "--restored", str(corrupt), "--out", str(tmp_path / "x.csv")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "broken.png" in run.stderr and "cannot decode image" in run.stderr
    assert not (tmp_path / "x.csv").exists()

    # --out naming a folder, or a batch size of 0: one line before any scoring, nothing left behind
    for bad in (
        ["--out", str(corrupt), "--overwrite"],
        ["--out", str(tmp_path / "y.csv"), "--batch-size", "0"],
    ):
        run = subprocess.run(
            [*command, "--restored", str(restored_dir), *bad], capture_output=True, text=True
        )
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert sorted(p.name for p in corrupt.iterdir()) == ["broken.png"] and not (tmp_path / "y.csv").exists()


@pytest.mark.slow
def test_llscore_score_over_two_processes_writes_the_single_process_file(
    llscore_checkpoints, sample_images, tmp_path
):
    """5 images over 2 processes (one repeated for equal shares): each scored once, the same file as one process."""
    folders = [
        "--restored",
        str(sample_images["restored"][0].parent),
        "--degraded",
        str(sample_images["degraded"][0].parent),
    ]
    score = [
        "-m",
        "llscore.cli",
        "score",
        "--ckpt",
        str(llscore_checkpoints["qwen2_vl"]),
        *folders,
        "--batch-size",
        "2",
    ]
    single = subprocess.run(
        [sys.executable, *score, "--out", str(tmp_path / "one.csv")], capture_output=True, text=True
    )
    assert single.returncode == 0, single.stderr
    run = accelerate_launch([*score, "--out", str(tmp_path / "two.csv")], processes=2)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = (pd.read_csv(tmp_path / name) for name in ("one.csv", "two.csv"))
    pd.testing.assert_frame_equal(one, two, check_exact=False, rtol=1e-5, atol=1e-6)  # float32, other batches
    assert len(two) == 5
    assert run.stdout.count("wrote 5 scores") == 1  # one main process: the two processes knew each other
    # each process scored its 3 of the 6 shared-out images in 2 batches of 2, not all 5 in 3 batches
    assert "| 2/2 [" in run.stderr and "| 3/3 [" not in run.stderr


@pytest.mark.slow
def test_a_corrupt_image_in_the_second_process_share_is_one_line(
    llscore_checkpoints, sample_images, tmp_path
):
    """`accelerate launch --num_processes 2 llscore score`: the last image is the second process's; it says which
    file in one line, and the first, left waiting for its results, exits without a traceback."""
    restored = Path(shutil.copytree(sample_images["restored"][0].parent, tmp_path / "restored"))
    (restored / "img_4.png").write_bytes(b"not a png")
    score = ["-m", "llscore.cli", "score", "--ckpt", str(llscore_checkpoints["qwen2_vl"]), "--restored"]
    run = accelerate_launch([*score, str(restored), "--out", str(tmp_path / "two.csv")], processes=2)
    ours = [
        line
        for line in run.stderr.splitlines()
        if "llscore score: error:" in line or line.startswith("[rank")
    ]
    assert run.returncode != 0 and len(ours) == 1 and "img_4.png" in ours[0], run.stderr[-3000:]
    assert "Connection closed by peer" not in run.stderr and not (tmp_path / "two.csv").exists()


def test_corrupt_image_error_names_the_file(scorer, tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match=r"corrupt\.jpg"):
        scorer.score([bad])


def test_unusable_arguments_name_the_argument_and_what_it_takes(llscore_checkpoints, sample_images):
    scorer = LLScore.from_pretrained(llscore_checkpoints["qwen2_vl"])
    image = sample_images["restored"][0]
    for empty in ([], torch.empty(0, 3, 28, 28)):
        with pytest.raises(ValueError, match=r"restored is empty; pass at least one image"):
            scorer.score(empty)
    with pytest.raises(ValueError, match=r"restored is empty"):
        scorer.read(torch.empty(0, 3, 28, 28))  # the differentiable path
    for size in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=rf"batch_size must be a whole number >= 1, got {size!r}"):
            scorer.score([image], batch_size=size)
    with pytest.raises(TypeError, match=r"restored\[1\] is a NoneType; an image is a path, a PIL image or"):
        scorer.score([image, None])
    with pytest.raises(TypeError, match=r"degraded\[0\] is a NoneType"):
        scorer.score([image], [None])
    with pytest.raises(TypeError, match=r"restored is a NoneType; pass an image or a sequence of images"):
        scorer.score(None)


def test_split_level_word_and_missing_contract_are_clear_errors(llscore_checkpoints, tiny_checkpoints):
    tokenizer = LLScore.from_pretrained(llscore_checkpoints["qwen2_vl"]).processor.tokenizer
    contract = PromptContract(level_words=(" excellentissimo", " good", " fair", " poor", " bad"))
    with pytest.raises(ValueError, match="' excellentissimo' is not one token"):
        check_answer_words(tokenizer, contract)
    with pytest.raises(CheckpointError, match=r"no llscore_config\.json"):
        LLScore.from_pretrained(tiny_checkpoints["qwen2_vl"])


def test_contract_round_trips_through_the_checkpoint(llscore_checkpoints, tmp_path):
    contract = PromptContract(quality_stem="Overall, the restored image looks")
    scorer = LLScore.from_pretrained(llscore_checkpoints["qwen3_vl"])
    scorer.config = LLScoreConfig(prompts=contract, resolution=ResolutionRule(3136, 8192))
    reloaded = LLScore.from_pretrained(scorer.save_pretrained(tmp_path / "c"))
    assert reloaded.config.prompts == contract and reloaded.config.resolution.max_pixels == 8192
    assert len(PromptContract().quality_questions) >= 9 and len(PromptContract().hallucination_questions) >= 9


def test_folders_leave_out_hidden_files(tmp_path):
    from llscore.cli import list_images, pair_by_name

    for folder in ("restored", "degraded"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (28, 28)).save(tmp_path / folder / "a.png")
        (tmp_path / folder / "._a.png").write_bytes(b"\x00\x05\x16\x07 macOS metadata")
    restored = list_images([str(tmp_path / "restored")])
    assert restored == [tmp_path / "restored" / "a.png"]
    assert pair_by_name(restored, tmp_path / "degraded") == [tmp_path / "degraded" / "a.png"]


def test_an_extreme_aspect_ratio_is_named(tmp_path, llscore_checkpoints):
    """The family's limit (`ModelFamily.check_aspect`), met where a backend prepares its inputs: the error names
    the file, through the API's scoring too."""
    Image.new("RGB", (2010, 10)).save(tmp_path / "strip.png")
    scorer = LLScore.from_pretrained(llscore_checkpoints["qwen2_vl"])
    with pytest.raises(ImageError, match=r"strip\.png: 2010x10 pixels; qwen2_vl processors .* up to 200:1"):
        scorer.score([tmp_path / "strip.png"])
    builder = InputBuilder(scorer.processor, scorer.config)
    with pytest.raises(ImageError, match=r"a PIL image: 10x2010 pixels"):
        builder.load(Image.new("RGB", (10, 2010)))
    with pytest.raises(ImageError, match=r"a tensor image: 2010x10 pixels"):
        builder.load(torch.zeros(3, 10, 2010))
    assert builder.load(Image.new("RGB", (2000, 10))).size == (2000, 10)  # 200:1 itself is accepted


def test_llscore_score_never_replaces_an_existing_file(tmp_path, capsys):
    from llscore.cli import main

    (tmp_path / "scores.csv").write_text("my earlier scores")
    command = [
        "score",
        "--ckpt",
        "unused",
        "--restored",
        str(tmp_path),
        "--out",
        str(tmp_path / "scores.csv"),
    ]
    assert main(command) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "scores.csv").read_text() == "my earlier scores"


def test_llscore_score_takes_the_lock_of_its_out_file(tmp_path, sample_images, capsys):
    """Two `llscore score --out race.csv` at once: the second stops at once, naming the first (as eval.py)."""
    from llscore.cli import main

    out = tmp_path / "race.csv"
    restored = str(sample_images["restored"][0].parent)
    with folder_held_by(out, "llscore score") as pid:
        assert main(["score", "--ckpt", "unused", "--restored", restored, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"race.csv is being written by llscore score (pid {pid} on " in err and not out.exists()


def test_llscore_score_checks_its_out_path_before_scoring(tmp_path, sample_images, capsys):
    """A file where --out needs a folder, or --out naming an image to score: one line before the model loads."""
    from llscore.cli import main

    images = Path(shutil.copytree(sample_images["restored"][0].parent, tmp_path / "images"))
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    score = ["score", "--ckpt", "unused", "--overwrite"]
    for args, named in (
        (["--restored", str(images), "--out", str(images / "img_0.png" / "x.csv")], "img_0.png is a file"),
        (["--restored", str(images), "--out", str(images / "img_1.png")], "img_1.png is an image to score"),
        (
            ["--restored", str(images), "--degraded", str(images), "--out", str(images / "img_2.png")],
            "img_2.png is an image to score",
        ),
    ):
        assert main([*score, *args]) == 2
        err = capsys.readouterr().err
        assert named in err and "unused" not in err and len(err.splitlines()) == 1, err
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before


@pytest.mark.parametrize(
    ("contract", "named"),
    [
        ([], "mapping"),
        ({"prompts": {"level_words": [" good"] * 5}}, "distinct"),
        (
            {"prompts": {"level_words": [f" w{i}" for i in range(100)], "level_weights": list(range(100))}},
            "2 to 10",
        ),
        ({"prompts": {"level_weights": [5, 4, float("nan"), 2, 1]}}, "finite"),
        ({"prompts": {"yes_no_words": [" Yes", " Yes"]}}, "two different"),
        ({"prompts": {"level_words": []}}, "non-empty"),
        ({"prompts": {"quality_questions": []}}, "quality_questions"),
        ({"resolution": {"min_pixels": 3136, "max_pixels": 10**12}}, "above"),
        ({"resolution": {"min_pixels": 3136, "max_pixels": 12544.5}}, "whole number"),
        ({"resolution": {"max_pixel": 12544}}, "unknown resolution keys"),
    ],
)
def test_an_untrusted_contract_is_refused_in_one_line(tmp_path, contract, named):
    """A checkpoint's llscore_config.json is input from whoever made it: nonsense is refused on load."""
    from llscore.modeling import read_llscore_config

    (tmp_path / "llscore_config.json").write_text(json.dumps(contract))
    with pytest.raises(CheckpointError, match=named) as refused:
        read_llscore_config(tmp_path)
    assert "llscore_config.json" in str(refused.value) and "\n" not in str(refused.value)


def test_a_checkpoint_with_cut_short_weights_is_one_line(llscore_checkpoints, tmp_path):
    copy = Path(shutil.copytree(llscore_checkpoints["qwen2_vl"], tmp_path / "ckpt"))
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(
        CheckpointError, match=r"ckpt: cannot load a model from this folder \(SafetensorError"
    ):
        LLScore.from_pretrained(copy)
