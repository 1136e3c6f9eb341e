"""bench/gpu_check.py: its CPU dry run (the same code as the GPU run, width-reduced models) and its part guard."""

import json
import time

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
    assert lora["step_s"] > 0 and qlora["step_s"] > 0 and lora["estimate_7b_gib"] > qlora["estimate_7b_gib"]
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == json.loads(json.dumps(report))
    assert "| part | image_side | batch | one_pass_images_per_s" in (tmp_path / "gpu_check.md").read_text()
