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
    report = GPU_CHECK.main(["--dry-run", "--out", str(tmp_path)])
    parts = report["parts"]
    statuses = {name: part["status"] for name, part in parts.items()}
    assert statuses == {
        "build qwen2_5_vl_7b": "ok",
        "scoring qwen2_5_vl_7b": "ok",
        "training lora qwen2_5_vl_7b": "ok",
        "training qlora qwen2_5_vl_7b": "ok",
        "build qwen3_vl_8b": "ok",
        "scoring qwen3_vl_8b": "ok",
        "training full": "skipped",
    }, {name: part.get("error") for name, part in parts.items()}
    for model in ("qwen2_5_vl_7b", "qwen3_vl_8b"):
        rows = parts[f"scoring {model}"]["rows"]
        assert [(r["resolution"], r["batch"]) for r in rows] == [
            ("56x56", 1),
            ("56x56", 2),
            ("max_pixels", 1),
            ("max_pixels", 2),
        ]
        speeds = [r[key] for r in rows for key in r if key.endswith("images_per_s")]
        assert all(speed > 0 for speed in speeds)
        small, large = rows[0]["prefill_gflops_per_image"], rows[2]["prefill_gflops_per_image"]
        assert large > small > 0, "more pixels, more visual tokens, more prefill FLOPs"
    lora, qlora = parts["training lora qwen2_5_vl_7b"], parts["training qlora qwen2_5_vl_7b"]
    assert lora["pairs_per_step"] == 4 and qlora["pairs_per_step"] == 1  # the recipes' own batch sizes
    assert lora["step_s"] > 0 and qlora["step_s"] > 0 and lora["estimate_7b_gib"] > qlora["estimate_7b_gib"]
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == json.loads(json.dumps(report))
    assert "| resolution | batch | one_pass_images_per_s" in (tmp_path / "gpu_check.md").read_text()
