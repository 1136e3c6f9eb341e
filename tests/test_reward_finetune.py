"""examples/reward_finetune.py: both reward fine-tuning variants on tiny models, and its report."""

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scripts import load_script

from llscore import LLScore, LLScoreReward
from llscore_sim.mini_bench.degradations import TASKS


@pytest.fixture(scope="module")
def example():
    return load_script("examples/reward_finetune.py")


@pytest.fixture(scope="module")
def split_dir(mini_bench, tmp_path_factory) -> Path:
    """A split of the 16-source bench (one source per task): 12 training sources, 4 held out."""
    ids = [f"src{i:03d}" for i in range(16)]
    out = tmp_path_factory.mktemp("split")
    (out / "splits.json").write_text(json.dumps({"train": ids[:12], "val": ids[12:14], "test": ids[14:]}))
    return out


@pytest.fixture(scope="module")
def sources(example, mini_bench, split_dir):
    return example.load_sources(mini_bench, split_dir, TASKS)


def test_sources_follow_the_split_and_pair_each_input_with_its_reference(sources):
    train, held_out = sources["train"], sources["held_out"]
    assert train.ids == [f"src{i:03d}" for i in range(12)]
    assert held_out.ids == ["src012", "src013", "src014", "src015"]
    assert train.degraded.shape == train.clean.shape == (12, 3, 112, 112)
    assert float(train.degraded.min()) >= 0 and float(train.degraded.max()) <= 1


def test_each_input_is_paired_with_its_own_reference(example, sources, mini_bench):
    for part in sources.values():
        for i, source_id in enumerate(part.ids):
            folder = mini_bench / "images" / source_id
            assert torch.equal(part.degraded[i], example.read_square(folder / "degraded.png", 112))
            assert torch.equal(part.clean[i], example.read_square(folder / "reference.png", 112))


def test_utility_is_the_ground_truth_utility_of_faithful_bench_outputs(example, mini_bench, sources):
    """The report's utility is the bench's own: recomputed from the PNGs beside the input and the consensus of
    the bench's restorations, it equals ground_truth.csv for every faithful output up to one constant (the
    pool's mean false-alarm charge)."""
    truth = pd.read_csv(mini_bench / "ground_truth.csv").set_index("image_id")
    part = sources["train"]
    offsets, utilities = [], []
    for i, source_id in enumerate(part.ids):
        folder = mini_bench / "images" / source_id
        degraded, agreed = (x.permute(1, 2, 0).double().numpy() for x in (part.degraded[i], part.agreed[i]))
        for image_id in truth.index[truth.index.str.startswith(source_id + "_")]:
            image = (
                example.read_square(folder / f"{image_id.split('_', 1)[1]}.png", 112)
                .permute(1, 2, 0)
                .double()
                .numpy()
            )
            value = example.utility(image, degraded, agreed)
            utilities.append(value)
            if truth.loc[image_id, "hallucinated"] == 0:
                offsets.append(value - truth.loc[image_id, "utility"])
    assert len(offsets) >= 60
    assert 0 < np.mean(offsets) < 0.05 and np.ptp(offsets) < 2e-3
    assert np.std(utilities) > 10 * np.ptp(offsets)  # the utilities themselves differ a lot


def test_missing_split_names_the_command_to_run(example, mini_bench, tmp_path):
    with pytest.raises(FileNotFoundError, match="run the main job first"):
        example.load_sources(mini_bench, tmp_path, TASKS)


def test_a_missing_scorer_an_unknown_task_or_an_earlier_report_is_one_line(
    example, mini_bench, split_dir, llscore_checkpoints, tmp_path, capsys
):
    common = ["--bench", str(mini_bench), "--prepared", str(split_dir), "--out", str(tmp_path / "out")]
    scorer = ["--scorer", str(llscore_checkpoints["qwen2_5_vl"])]
    for argv, named in (
        (
            [*common, "--tasks", *TASKS, "--scorer", str(tmp_path / "no_scorer")],
            "no_scorer: no such local folder",
        ),
        ([*common, *scorer, "--tasks", *TASKS, "no_such_task"], "tasks ['no_such_task'] are not in"),
    ):
        assert example.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert named in err[-1] and "Traceback" not in "\n".join(err)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.md").write_text("my notes")
    assert example.main([*common, *scorer]) == 2
    assert "already holds a report" in capsys.readouterr().err
    assert (tmp_path / "out" / "report.md").read_text() == "my notes"


@pytest.mark.parametrize("variant", ["differentiable_finetune", "sampling_finetune"])
def test_variant_raises_the_training_batch_reward_and_leaves_the_scorer_unchanged(
    example, sources, llscore_checkpoints, variant
):
    torch.manual_seed(0)
    scorer = LLScore.from_pretrained(llscore_checkpoints["qwen2_5_vl"])
    reward = LLScoreReward(scorer, hallucination_weight=1.0, batch_size=32)
    before_weights = copy.deepcopy(scorer.model.state_dict())
    train = sources["train"]
    batch = example.Sources(train.ids[:4], train.degraded[:4], train.clean[:4], train.agreed[:4])
    restorer = example.ResidualCNN()
    example.pretrain(restorer, batch, steps=5, lr=1e-3, batch_size=4, seed=0)
    with torch.no_grad():
        reward_before = reward(restorer(batch.degraded), batch.degraded).mean().item()

    settings = example.FinetuneSettings(steps=6, lr=1e-3, batch_size=4, group_size=6, seed=0)
    history = getattr(example, variant)(restorer, reward, batch, settings)

    with torch.no_grad():
        reward_after = reward(restorer(batch.degraded), batch.degraded).mean().item()
    assert len(history) == 6
    assert reward_after > reward_before + 1e-3, (reward_before, reward_after)
    after_weights = scorer.model.state_dict()
    assert all(torch.equal(before_weights[k], after_weights[k]) for k in before_weights)
    assert all(p.grad is None and not p.requires_grad for p in scorer.model.parameters())


def test_group_advantages_are_standardised_within_each_group(example):
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [2.0, 2.0, 2.0, 2.0]])
    advantages = example.group_advantages(rewards)
    torch.testing.assert_close(advantages[0].mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(advantages[0].std(), torch.tensor(1.0), atol=1e-5, rtol=0)
    assert advantages[0].argmax() == 3 and advantages[0].argmin() == 0
    assert torch.equal(advantages[1], torch.zeros(4))


def test_fidelity_is_free_inside_the_tolerance_and_grows_outside(example):
    degraded = torch.full((1, 3, 16, 16), 0.5)
    noisy = degraded + 0.1 * torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert example.fidelity(degraded + 0.02, degraded, tolerance=0.03) == 0
    assert example.fidelity(noisy, degraded, tolerance=0.03) == 0
    small, large = (example.fidelity(degraded + d, degraded, tolerance=0.03) for d in (0.1, 0.3))
    assert 0 < small < large


def test_restorer_starts_as_the_identity(example, sources):
    degraded = sources["train"].degraded[:2]
    assert torch.equal(example.ResidualCNN()(degraded), degraded)


def test_a_group_of_one_is_refused(example):
    with pytest.raises(SystemExit):
        example.parse_args(["--group-size", "1"])


def test_hacking_is_flagged_only_when_reward_rises_while_utility_falls(example):
    rows = {  # output -> (reward, utility) of sources s0, s1
        "base": ((3.0, 3.0), (0.6, 0.6)),
        "hacked": ((3.5, 3.1), (0.4, 0.7)),
        "better": ((3.5, 3.5), (0.7, 0.7)),
        "worse": ((2.5, 2.5), (0.5, 0.5)),
    }
    per_image = pd.DataFrame(
        [
            {"output": name, "source_id": f"s{i}", "reward": reward[i], "utility": utility[i]}
            for name, (reward, utility) in rows.items()
            for i in (1, 0)
        ]
    )
    verdicts = example.hacking_verdicts(per_image, "base", ["hacked", "better", "worse"])
    assert [v["reward_hacking"] for v in verdicts.values()] == [True, False, False]
    assert verdicts["hacked"]["reward_change"] == pytest.approx(0.3)
    assert verdicts["hacked"]["utility_change"] == pytest.approx(-0.05)
    assert verdicts["hacked"]["share_reward_up_utility_down"] == 0.5
    assert verdicts["better"]["share_reward_up_utility_down"] == 0.0


def test_run_writes_a_consistent_report(example, mini_bench, split_dir, llscore_checkpoints, tmp_path):
    argv = [
        *("--scorer", str(llscore_checkpoints["qwen2_5_vl"]), "--bench", str(mini_bench)),
        *("--prepared", str(split_dir), "--tasks", *TASKS, "--out", str(tmp_path)),
        *("--pretrain-steps", "3", "--steps", "2", "--group-size", "3", "--hallucination-weight", "0.5"),
    ]
    metrics = example.run(example.parse_args(argv))
    assert {p.name for p in tmp_path.iterdir()} >= {
        "report.md",
        "metrics.json",
        "per_image.csv",
        "training_curves.png",
        "examples.png",
    }
    assert json.loads((tmp_path / "metrics.json").read_text())["verdicts"] == metrics["verdicts"]
    assert set(metrics["verdicts"]) == {example.DIFFERENTIABLE, example.SAMPLING}
    per_image = pd.read_csv(tmp_path / "per_image.csv")
    assert len(per_image) == 5 * 4
    expected = per_image["llscore"] - 0.5 * per_image["p_hallucination"]
    assert (per_image["reward"] - expected).abs().max() < 1e-4
    by_output = per_image.pivot(index="source_id", columns="output", values="utility")
    assert (by_output["clean reference"] > by_output["degraded input (no restoration)"]).all()
    truth = pd.read_csv(mini_bench / "ground_truth.csv")
    held_out_truth = truth[truth["image_id"].str[:6].isin(["src012", "src013", "src014", "src015"])]
    (everything,) = [row for row in metrics["bench_restorers"] if row["restorers"] == "all"]
    assert everything["images"] == len(held_out_truth) == 40
    assert everything["mean utility"] == pytest.approx(held_out_truth["utility"].mean())
    flagged = any(v["reward_hacking"] for v in metrics["verdicts"].values())
    assert ("REWARD HACKING" in (tmp_path / "report.md").read_text()) == flagged
