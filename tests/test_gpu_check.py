"""bench/gpu_check.py: its CPU dry run (the same code as the GPU run, width-reduced models), its part guard, and
the pieces of its real-size CPU mode that can be checked without allocating a real model (docs/performance.md)."""

import json
import signal
import sys
import time
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from scripts import load_script

GPU_CHECK = load_script("bench/gpu_check.py")


def test_a_failing_part_is_recorded_and_the_others_still_run():
    def out_of_memory():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    parts = [
        ("first", lambda: {"value": 1}, 0),
        ("oom", out_of_memory, 0),
        ("after", lambda: {"value": 2}, 0),
        ("too long", lambda: {"value": 3}, 1e9),
    ]
    results = GPU_CHECK.run_parts(parts, deadline=time.monotonic() + 60)
    assert results["first"]["status"] == "ok" and results["first"]["value"] == 1
    assert results["oom"] == {
        "status": "failed",
        "error": "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        "seconds": results["oom"]["seconds"],
    }
    assert results["after"]["status"] == "ok" and results["after"]["value"] == 2
    assert results["too long"]["status"] == "skipped" and "needs ~" in results["too long"]["reason"]


def test_a_part_can_skip_itself_and_its_time_is_estimated_when_it_is_reached():
    estimates = []

    def too_big():
        GPU_CHECK.check_memory("training llscore_qwen", 10 * 2**40, 22e9)  # 10 TiB more than now
        return {"value": 1}

    def estimate():
        estimates.append(time.monotonic())
        return 5.0

    parts = [("too big", too_big, 0), ("fits", lambda: {"value": 2}, estimate), ("late", dict, lambda: 1e9)]
    before = time.monotonic()
    results = GPU_CHECK.run_parts(parts, deadline=time.monotonic() + 60)
    assert results["too big"]["status"] == "skipped"
    assert "training llscore_qwen: estimated peak" in results["too big"]["reason"]
    assert "> --max-rss-gb 22" in results["too big"]["reason"]
    assert results["fits"]["value"] == 2 and len(estimates) == 1 and estimates[0] >= before
    assert results["late"]["status"] == "skipped"
    assert results["late"]["reason"].startswith("needs ~1000000000 s")
    GPU_CHECK.check_memory("scoring", 0, 1e15)  # within the limit: no exception


def test_peak_memory_sees_an_allocation_that_is_freed_before_the_block_ends():
    with GPU_CHECK.PeakMemory() as memory:
        block = torch.ones(64 * 2**20, dtype=torch.float32)  # 256 MiB, touched
        block.sum()
        time.sleep(0.05)
        del block
    row = memory.row()
    assert row["part_rss_gib"] > 0.2 and row["peak_rss_gib"] > row["rss_before_gib"]


def test_a_part_that_reaches_the_memory_limit_is_stopped_and_the_next_one_runs():
    def growing():
        with GPU_CHECK.PeakMemory(limit=GPU_CHECK.current_rss() + 200e6) as memory:
            blocks = []
            for _ in range(40):  # up to 1.3 GB, 32 MiB at a time: stopped near 0.2 GB
                blocks.append(torch.ones(8 * 2**20))
                time.sleep(0.02)
        return memory.row()

    ignore_interrupts = signal.signal(signal.SIGINT, lambda *_: None)  # as libraries that trap Ctrl-C do
    try:
        results = GPU_CHECK.run_parts(
            [("growing", growing, 0), ("next", lambda: {"value": 1}, 0)], time.monotonic() + 60
        )
    finally:
        signal.signal(signal.SIGINT, ignore_interrupts)
    assert results["growing"]["status"] == "stopped", results["growing"]
    assert "GB resident passed the" in results["growing"]["reason"]
    assert results["next"]["status"] == "ok"


def test_a_part_starts_only_with_a_margin_over_its_estimate():
    now = GPU_CHECK.current_rss()
    GPU_CHECK.check_memory("training llscore_qwen", 1e9, now + 1.2e9)
    with pytest.raises(GPU_CHECK.PartSkipped, match="estimated peak"):  # fits exactly, but not with 10 % over
        GPU_CHECK.check_memory("training llscore_qwen", 1e9, now + 1.05e9)
    with pytest.raises(GPU_CHECK.PartSkipped, match=r"> --max-rss-gb"):  # a training part's process: the
        GPU_CHECK.check_memory("training llscore_qwen", 1e9, now + 1.2e9, held_elsewhere=0.2e9)  # check's too


def test_the_parts_of_a_model_that_was_not_built_are_skipped_with_the_reason(tmp_path, monkeypatch):
    # memory is the limit here, not time: the bf16 matmul rate is not measured (a machine without bf16 kernels
    # took 8 minutes to measure it, then estimated days per part)
    monkeypatch.setattr(sys.modules[GPU_CHECK.CpuBudget.__module__], "matmul_rate", lambda device: 1e12)
    budget = GPU_CHECK.CpuBudget(max_rss_gb=0.001, deadline=time.monotonic() + 1e5)
    setting = GPU_CHECK.Setting.for_run(False, "cpu")
    parts = GPU_CHECK.model_parts("qwen3_vl_8b", tmp_path, setting, False, None, budget)
    results = GPU_CHECK.run_parts(parts, budget.deadline)
    assert results.pop("build qwen3_vl_8b")["reason"].startswith("build qwen3_vl_8b: estimated peak")
    assert len(results) == 4 and {part["status"] for part in results.values()} == {"skipped"}
    assert {part["reason"] for part in results.values()} == {
        "qwen3_vl_8b was not built (its build part says why)"
    }


@pytest.fixture(scope="module")
def tiny_7b(tmp_path_factory):
    """The dry run's width-reduced Qwen2.5-VL-7B, saved as a checkpoint."""
    work = tmp_path_factory.mktemp("gpu_check")
    GPU_CHECK.build("qwen2_5_vl_7b", work, GPU_CHECK.Setting.for_run(True), True)
    return work


@pytest.mark.slow
def test_a_training_part_runs_in_its_own_process_which_is_ended_at_the_memory_limit(tiny_7b):
    import psutil

    setting = GPU_CHECK.Setting.for_run(True)
    budget = SimpleNamespace(max_rss=GPU_CHECK.current_rss() + 8e9, deadline=time.monotonic() + 600)
    row = GPU_CHECK.training_in_child(
        tiny_7b / "qwen2_5_vl_7b", "llscore_qwen", setting, tiny_7b, True, budget
    )
    assert row["step_s"] > 0 and row["pairs_per_step"] == 4 and row["peak_rss_gib"] > row["rss_before_gib"]

    children = []
    watched = GPU_CHECK.PeakMemory.__enter__

    def remember_the_child(memory):
        children.append(memory.pid)
        return watched(memory)

    budget.max_rss = GPU_CHECK.current_rss() + 150e6  # the child passes 150 MB while it imports torch
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GPU_CHECK.PeakMemory, "__enter__", remember_the_child)
        results = GPU_CHECK.run_parts(
            [
                (
                    "training",
                    partial(
                        GPU_CHECK.training_in_child,
                        tiny_7b / "qwen2_5_vl_7b",
                        "llscore_qwen",
                        setting,
                        tiny_7b,
                        True,
                        budget,
                    ),
                    0,
                )
            ],
            budget.deadline,
        )
    assert (
        results["training"]["status"] == "stopped"
        and "MB resident passed" not in results["training"]["reason"]
    )
    assert "GB resident passed the" in results["training"]["reason"]
    assert children and not psutil.pid_exists(children[0])


def test_filled_random_weights_keep_ties_and_norms_and_are_not_constant():
    from transformers import AutoModelForImageTextToText

    values = json.loads((GPU_CHECK.REPO / "configs/models/qwen2_5_vl_3b.json").read_text())
    values.pop("_comment")
    values["text_config"].update(hidden_size=64, intermediate_size=96, num_hidden_layers=2, vocab_size=500)
    values["text_config"].update(num_attention_heads=4, num_key_value_heads=2)
    values["text_config"]["rope_parameters"]["mrope_section"] = [2, 3, 3]
    values["vision_config"].update(hidden_size=32, intermediate_size=48, depth=2, out_hidden_size=64)
    values["vision_config"].update(num_heads=2, fullatt_block_indexes=[1])
    config = GPU_CHECK._sibling("estimate_memory").AutoConfig.for_model(**values)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    model.to_empty(device="cpu")
    model.tie_weights()
    GPU_CHECK.fill_random(model)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # 3B: a tied head
    state = model.state_dict()
    assert torch.equal(state["model.language_model.norm.weight"], torch.ones(64, dtype=torch.bfloat16))
    assert not state["model.visual.blocks.0.attn.qkv.bias"].any()
    weight = state["model.language_model.layers.0.mlp.up_proj.weight"].float()
    assert 0.015 < weight.std() < 0.025 and torch.isfinite(weight).all()
    assert not torch.equal(weight[0], weight[1])


def test_the_memory_estimate_reads_each_architecture():
    estimate = GPU_CHECK._sibling("estimate_memory")
    small, large = (
        estimate.parameter_counts(64, GPU_CHECK.REPO / f"configs/models/{n}.json")
        for n in ("qwen2_5_vl_3b", "qwen2_5_vl_7b")
    )
    assert (small["hidden"], small["layers"], large["hidden"], large["layers"]) == (2048, 36, 3584, 28)
    assert small["embeddings"] == 151936 * 2048  # tied: counted once
    assert large["embeddings"] == 2 * 152064 * 3584
    assert 3.7e9 < small["total"] < 3.8e9 and 8.2e9 < large["total"] < 8.4e9
    rows = [estimate.estimate(counts, 1, 1, 256)[0] for counts in (small, large)]
    assert rows[0]["act"] < rows[1]["act"] and rows[0]["weights"] < rows[1]["weights"]
    assert rows[1]["weights"] == 2 * large["total"]


def test_a_4bit_model_on_cpu_is_planned_at_the_memory_it_was_measured_to_take():
    seven, three = (GPU_CHECK.quantized_weights_on_cpu(n) for n in ("qwen2_5_vl_7b", "qwen2_5_vl_3b"))
    # 3B, measured: 12.7 GiB for the step, of which ~2.4 GiB LoRA state and activations (docs/performance.md)
    assert 9.5 * 2**30 < three < 11.5 * 2**30
    with pytest.raises(GPU_CHECK.PartSkipped, match="estimated peak"):  # the 7B reached the machine's memory
        GPU_CHECK.check_memory("training llscore_qlora", seven, 22e9)
    GPU_CHECK.check_memory("training llscore_qlora", three, 22e9)  # the 3B fall-back fits


@pytest.mark.slow
def test_the_dry_run_measures_every_part_on_cpu(tmp_path):
    report = GPU_CHECK.main(["--dry-run", "--out", str(tmp_path), "--budget-s", "1e9"])
    parts = report["parts"]
    scoring = [
        f"scoring {m} {size} batch {b}"
        for m in ("qwen2_5_vl_7b", "qwen3_vl_8b")
        for size in ("56x56", "max_pixels")
        for b in (1, 2)
    ]
    expected = [
        "build qwen2_5_vl_7b",
        "training lora qwen2_5_vl_7b",
        "training qlora qwen2_5_vl_7b",
        "build qwen3_vl_8b",
    ]
    assert {name: part["status"] for name, part in parts.items()} == {
        "training full": "skipped",
        **dict.fromkeys(expected + scoring, "ok"),
    }, {name: part.get("error") for name, part in parts.items()}
    for model in ("qwen2_5_vl_7b", "qwen3_vl_8b"):
        small, large = parts[f"scoring {model} 56x56 batch 1"], parts[f"scoring {model} max_pixels batch 2"]
        assert (
            large["image_side"] == 112 and large["visual_tokens_per_image"] > small["visual_tokens_per_image"]
        )
        assert large["prefill_gflops_per_image"] > small["prefill_gflops_per_image"] > 0
        assert all(small[key] > 0 for key in small if key.endswith("images_per_s"))
    lora, qlora = parts["training lora qwen2_5_vl_7b"], parts["training qlora qwen2_5_vl_7b"]
    assert lora["pairs_per_step"] == 4 and qlora["pairs_per_step"] == 1  # the recipes' own batch sizes
    assert lora["step_s"] > 0 and qlora["step_s"] > 0 and lora["estimate_gib"] > qlora["estimate_gib"]
    assert lora["estimated_model"] == "qwen2_5_vl_7b" and lora["peak_rss_gib"] >= lora["rss_before_gib"] > 0
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == json.loads(json.dumps(report))
    assert "| part | image_side | batch | one_pass_images_per_s" in (tmp_path / "gpu_check.md").read_text()


def test_a_measured_run_is_replaced_only_by_a_real_run_with_overwrite(tmp_path, capsys):
    """A dry run (CI runs one) never replaces a real run's gpu_check.json; a real run asks for --overwrite."""
    measured = json.dumps({"device": "NVIDIA H100", "dry_run": False, "parts": {"scoring": {"status": "ok"}}})
    (tmp_path / "gpu_check.json").write_text(measured)
    for argv, refusal in (
        (["--dry-run"], "a dry run never replaces a measured run's results: choose another --out"),
        ([], "pass --overwrite to replace them"),
        (["--device", "cpu", "--real-size"], "pass --overwrite to replace them"),
    ):
        with pytest.raises(SystemExit):
            GPU_CHECK.main([*argv, "--out", str(tmp_path), "--budget-s", "1e-9", "--models", "qwen3_vl_8b"])
        err = capsys.readouterr().err
        assert refusal in err and f"{tmp_path / 'gpu_check.json'} holds a measured run's results" in err
        assert (tmp_path / "gpu_check.json").read_text() == measured
    (tmp_path / "gpu_check.json").write_text(json.dumps({"dry_run": True, "parts": {}}))
    report = GPU_CHECK.main(
        ["--dry-run", "--out", str(tmp_path), "--budget-s", "1e-9", "--models", "qwen3_vl_8b"]
    )
    assert (
        json.loads((tmp_path / "gpu_check.json").read_text())["parts"] == report["parts"]
    )  # a dry run's, replaced
