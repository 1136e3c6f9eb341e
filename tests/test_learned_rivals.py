"""The learned yardsticks in bench/ (docs/training.md, "Capacity"): the tower probe's head reads exactly the
visual tokens the LLM receives, and both it and the CNN rival keep their best validation."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scripts import load_script

from llscore import LLScore
from llscore.data.build import build_dataset

PROBE = load_script("bench/tower_probe.py")
CNN_RIVAL = load_script("bench/cnn_rival.py")


def test_the_probe_reads_the_tokens_the_llm_receives(llscore_checkpoints):
    """The probe's claim (the LLM is handed what the head reads) holds only if its tokens are the ones placed at
    the image positions of LL-Score's own prompt: same resolution rule, merger and order."""
    ckpt = llscore_checkpoints["qwen2_5_vl"]
    rng = np.random.default_rng(0)
    degraded, restored = (
        Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)) for _ in range(2)
    )
    scorer = LLScore.from_pretrained(ckpt)
    inputs = scorer.backend.builder("quality", [restored], [degraded])
    received = {}

    def capture(module, args, kwargs):
        received["embeds"] = kwargs["inputs_embeds"].detach()

    hook = scorer.model.model.language_model.register_forward_pre_hook(capture, with_kwargs=True)
    with torch.no_grad():
        scorer.model(**inputs)
    hook.remove()
    at_images = received["embeds"][inputs["input_ids"] == scorer.model.config.image_token_id]

    tokens = PROBE.encode(ckpt, [degraded, restored])
    assert tokens.shape[:2] == (2, len(at_images) // 2)
    assert not torch.allclose(tokens[0], tokens[1], atol=1e-3)
    assert torch.allclose(at_images, tokens.flatten(0, 1), atol=1e-5)


@pytest.fixture(scope="module")
def prepared(mini_bench, tmp_path_factory):
    return build_dataset(mini_bench, tmp_path_factory.mktemp("rivals") / "prepared")


@pytest.mark.parametrize("rival", ["tower_probe", "cnn_rival"])
def test_a_learned_rival_keeps_its_best_validation_and_measures_test(
    rival, prepared, llscore_checkpoints, tmp_path
):
    script, args = PROBE, ["--ckpt", str(llscore_checkpoints["qwen2_5_vl"])]
    if rival == "cnn_rival":
        script, args = CNN_RIVAL, []
    report = script.main(
        [
            *args,
            *("--prepared", str(prepared), "--out", str(tmp_path)),
            *("--minutes", "0.02", "--validate-every", "0.3"),
        ]
    )
    assert len(report["curve"]) >= 3
    best = max(point["val_within_source_srcc"] for point in report["curve"])
    assert report["val"]["within_source_srcc"] == best
    written = json.loads(next(tmp_path.glob(f"{rival}*.json")).read_text())["test"]
    assert written["within_source_srcc"] == report["test"]["within_source_srcc"]
