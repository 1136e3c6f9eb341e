"""eval.py on LL-Bench-mini with tiny checkpoints: outputs, baseline cache reuse, clear errors."""

import json
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from huggingface_hub import constants
from scripts import accelerate_launch

from llscore import LLScore
from llscore.data.build import build_dataset
from llscore.data.config import DataConfig
from llscore.data.inputs import ensure_prepared
from llscore.errors import DataError, EvaluationError
from llscore.evaluation import EvalData, Evaluators, evaluate, load_eval_data, score_split
from llscore.metrics import MetricWarning
from llscore.prompts import LLScoreConfig
from llscore.scoring import load_image, read_quality

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prepared(mini_bench, tmp_path_factory) -> Path:
    return build_dataset(mini_bench, tmp_path_factory.mktemp("prep") / "prepared")


def run_eval(*args: str) -> int:
    argv = sys.argv
    sys.argv = ["eval.py", *args]
    try:
        runpy.run_path(str(REPO / "eval.py"), run_name="__main__")
    except SystemExit as exit_:
        return exit_.code
    finally:
        sys.argv = argv
    return 0


def test_a_perfect_evaluator_scores_perfectly(prepared):
    data = load_eval_data(prepared, "test")
    human = data.images["human_score"].to_numpy()
    evaluators = Evaluators(scores={"oracle": human, "reversed": -human}, unavailable={"lpips": "no weights"})
    report = evaluate(data, evaluators, n_boot=50)
    assert report["overall"]["oracle"]["srcc"] == pytest.approx(1.0)
    assert report["overall"]["reversed"]["srcc"] == pytest.approx(-1.0)
    assert report["overall"]["oracle"]["pairwise_acc"] > report["overall"]["reversed"]["pairwise_acc"]
    low, high = report["overall"]["oracle"]["srcc_ci"]
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)
    assert report["leaderboard"]["kendall_tau"]["oracle"] == pytest.approx(1.0)
    assert set(report["per_task"]) == set(data.images["task"]) and set(report["per_family"]) == {
        "lgm",
        "conventional",
    }
    assert report["unavailable"] == {"lpips": "no weights"}  # once, not in every group
    assert not any("lpips" in table for table in [report["overall"], *report["per_task"].values()])
    assert 0.5 < report["human_ceiling"]["loo_agreement"] <= 1


class BrightnessBackend:
    """A second scoring backend, no model: the restoration's mean brightness read as a level distribution, and
    P(hallucination) as its darkness. What `LLScore` adds (batching, worker threads, order, the readings) must
    leave these numbers exactly as computed on all images at once."""

    def prepare(self, restored, degraded, tasks):
        pixels = [np.asarray(load_image(image), dtype=np.float32) for image in restored]
        brightness = torch.tensor([image.mean() / 255 for image in pixels])
        return {"brightness": brightness, "tasks": tuple(tasks)}

    def read(self, inputs):
        reading = read_quality(self.level_logits(inputs["brightness"]), range(5), WEIGHTS)
        dark = 1 - inputs["brightness"] if "hallucination" in inputs["tasks"] else None
        return reading, dark

    @staticmethod
    def level_logits(brightness):
        return -2 * (1 + 4 * brightness[:, None] - WEIGHTS) ** 2


WEIGHTS = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])


def test_a_second_scoring_backend_gives_its_own_numbers_through_the_evaluation_pipeline(prepared):
    from PIL import Image

    data = load_eval_data(prepared, "test")
    scorer = LLScore(None, None, LLScoreConfig(), backend=BrightnessBackend())
    scored = score_split(scorer, data.images, batch_size=3, progress=False, workers=2)
    brightness = torch.tensor(
        [
            np.asarray(Image.open(path).convert("RGB"), dtype=np.float32).mean() / 255
            for path in data.images["restored"]
        ]
    )
    expected = read_quality(BrightnessBackend.level_logits(brightness), range(5), WEIGHTS)
    np.testing.assert_allclose(scored["llscore"], expected.score.numpy(), rtol=1e-6)
    np.testing.assert_allclose(scored["p_hallucination"], 1 - brightness.numpy(), rtol=1e-6)
    report = evaluate(
        data,
        Evaluators({"llscore": scored["llscore"].to_numpy()}, scored["p_hallucination"].to_numpy()),
        n_boot=0,
    )
    human = data.images["human_score"]
    assert report["overall"]["llscore"]["srcc"] == pytest.approx(
        human.corr(pd.Series(expected.score.numpy()), method="spearman")
    )
    assert len(set(np.round(expected.score.numpy(), 3))) > 10  # the backend's scores vary: the check can fail


def test_a_backend_registered_by_name_scores_through_eval_and_the_cli(
    prepared, llscore_checkpoints, tmp_path, monkeypatch, capsys
):
    """`--backend NAME` reaches a registered builder from both entry points, through the shared runtime options;
    the builder gets the located checkpoint and those options, and its numbers come back unchanged."""
    from llscore.backends import BACKENDS
    from llscore.cli import main as llscore_main

    built = []

    def brightness_backend(ref, options, **loading):
        built.append((ref.folder, options.dtype))
        return BrightnessBackend()

    monkeypatch.setitem(BACKENDS, "brightness", brightness_backend)
    ckpt = llscore_checkpoints["qwen2_vl"]
    out = tmp_path / "eval"
    common = ["--data", str(prepared), "--baselines", "none", "--bootstrap", "0"]
    assert (
        run_eval(
            "--ckpt", str(ckpt), "--backend", "brightness", "--dtype", "bfloat16", "--out", str(out), *common
        )
        == 0
    )
    assert built == [(Path(ckpt), "bfloat16")]
    scores = pd.read_csv(out / "scores.csv")
    data = load_eval_data(prepared, "test")
    brightness = torch.tensor(
        [np.asarray(load_image(path), dtype=np.float32).mean() / 255 for path in data.images["restored"]]
    )
    expected = read_quality(BrightnessBackend.level_logits(brightness), range(5), WEIGHTS).score.numpy()
    np.testing.assert_allclose(scores["llscore"], expected, rtol=1e-6)

    restored = list(data.images["restored"][:3])
    csv = tmp_path / "scores.csv"
    code = llscore_main(
        [
            "score",
            "--ckpt",
            str(ckpt),
            "--restored",
            *restored,
            "--out",
            str(csv),
            "--backend",
            "brightness",
            "--workers",
            "1",
        ]
    )
    assert code == 0 and built[-1] == (Path(ckpt), "float32")  # --workers: the scoring's, not the builder's
    np.testing.assert_allclose(pd.read_csv(csv)["score"], expected[:3], rtol=1e-6)
    capsys.readouterr()
    assert run_eval("--ckpt", str(ckpt), "--backend", "vllm", "--out", str(tmp_path / "none"), *common) == 2
    assert "unknown backend 'vllm'; registered: brightness, transformers" in capsys.readouterr().err


def test_eval_writes_every_output_and_reuses_the_baseline_cache(
    prepared, llscore_checkpoints, tmp_path, monkeypatch, capsys
):
    cache = tmp_path / "cache"
    common = ["--data", str(prepared), "--baselines", "psnr,ssim,piqe,lpips", "--cache-dir", str(cache)]
    first = tmp_path / "first"
    assert (
        run_eval(
            "--ckpt", str(llscore_checkpoints["qwen2_vl"]), "--out", str(first), "--bootstrap", "50", *common
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "Downloading" not in printed and "unavailable here (reasons in report.md): lpips" in printed
    for name in (
        "metrics.json",
        "report.md",
        "scores.csv",
        "scatter_vs_human.png",
        "per_task_srcc.png",
        "hallucination_reliability.png",
    ):
        assert (first / name).stat().st_size > 0, name
    report = json.loads((first / "metrics.json").read_text())
    assert {"overall", "per_task", "per_family", "hallucination", "leaderboard", "human_ceiling"} <= set(
        report
    )
    overall = report["overall"]
    assert {"srcc", "plcc", "plcc_logistic", "krcc", "pairwise_acc", "within_source_srcc"} <= set(
        overall["llscore"]
    )
    assert (
        report["unavailable"]["lpips"]
        and "lpips" not in overall
        and "lpips" in (first / "report.md").read_text()
    )
    tables = (first / "report.md").read_text().split("## Unavailable baselines")[0]
    assert "lpips" not in tables and "unavailable" not in tables  # listed once, after the tables
    scores = pd.read_csv(first / "scores.csv")
    expected = [
        "image_id",
        "source_id",
        "task",
        "model",
        "model_family",
        "human_score",
        "llscore",
        "llscore_std",
        "p_hallucination",
    ]
    assert list(scores.columns[:9]) == expected
    assert {"psnr@input", "psnr@ref", "ssim@ref", "piqe"} <= set(scores.columns)
    assert scores["llscore"].between(1, 5).all() and scores["psnr@ref"].notna().all()

    import llscore.baselines

    def no_recompute(*args, **kwargs):
        raise AssertionError("a cached baseline was recomputed")

    monkeypatch.setattr(llscore.baselines, "_create_metric", no_recompute)
    second = tmp_path / "second"
    assert (
        run_eval(
            "--ckpt",
            str(llscore_checkpoints["qwen2_5_vl"]),
            "--out",
            str(second),
            "--bootstrap",
            "50",
            *common,
        )
        == 0
    )
    again = pd.read_csv(second / "scores.csv")
    np.testing.assert_allclose(again["psnr@ref"], scores["psnr@ref"])
    assert not np.allclose(again["llscore"], scores["llscore"]), "another checkpoint gives other scores"


def test_missing_checkpoint_and_empty_split_are_clear_errors(prepared, mini_bench, tmp_path, capsys):
    assert run_eval("--ckpt", str(tmp_path / "nope"), "--data", str(prepared), "--baselines", "none") == 2
    assert "nope" in capsys.readouterr().err
    assert run_eval("--data", str(prepared), "--split", "dev", "--baselines", "psnr") == 2
    assert "no split 'dev'" in capsys.readouterr().err
    config = DataConfig.from_dict({"ratios": {"train": 0.8, "val": 0.0, "test": 0.2}})
    with pytest.raises(DataError, match=r"split\(s\) \['val'\] would be empty"):
        build_dataset(mini_bench, tmp_path / "no_val", config)
    assert not (tmp_path / "no_val").exists()
    with pytest.raises(EvaluationError, match=r"not a prepared dataset"):
        load_eval_data(tmp_path, "test")
    assert run_eval("--data", str(tmp_path), "--baselines", "psnr") == 2
    assert "neither a prepared dataset (splits.json) nor an LL-Bench folder" in capsys.readouterr().err


def test_a_missing_checkpoint_says_where_it_was_looked_for(prepared, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for name, tried in (
        ("checkpoints/llscore-tyny", "no such local folder, and as a Hub id it could not be loaded"),
        ("does/not/exist", "no such local folder, and as a Hub id it could not be loaded (HFValidationError"),
        (str(tmp_path / "gone"), "gone: no such local folder"),
    ):
        assert run_eval("--ckpt", name, "--data", str(prepared), "--baselines", "none") == 2
        error = capsys.readouterr().err
        assert tried in error and error.count("\n") == 1, error


def test_an_unknown_baseline_is_an_error_before_any_scoring(prepared, tmp_path, capsys):
    out = tmp_path / "eval"
    assert run_eval("--data", str(prepared), "--baselines", "psnr,notametric", "--out", str(out)) == 2
    error = capsys.readouterr().err
    assert "unknown baseline(s) notametric" in error and error.count("\n") == 1
    assert not out.exists()
    out.write_text("my notes")
    assert run_eval("--data", str(prepared), "--baselines", "psnr", "--out", str(out)) == 2
    assert "is a file" in capsys.readouterr().err and out.read_text() == "my notes"


def test_a_one_source_split_reports_no_interval(prepared):
    data = load_eval_data(prepared, "test")
    source = data.images["source_id"].iloc[0]
    one = EvalData(
        images=data.images[data.images["source_id"] == source].reset_index(drop=True),
        pairs=data.pairs[data.pairs["source_id"] == source].reset_index(drop=True),
        split="test",
        prepared_dir=data.prepared_dir,
    )
    human = one.images["human_score"].to_numpy()
    with pytest.warns(MetricWarning, match="1 source image"):
        report = evaluate(one, Evaluators(scores={"oracle": human}), n_boot=20)
    assert report["overall"]["oracle"]["srcc"] == pytest.approx(1.0)
    assert "srcc_ci" not in report["overall"]["oracle"]


def test_eval_zero_shot_base_is_labelled_as_such(prepared, tiny_checkpoints, tmp_path):
    from llscore.modeling import ZeroShotWarning

    base = str(tiny_checkpoints["qwen2_vl"])
    common = ["--ckpt", base, "--data", str(prepared), "--baselines", "none", "--bootstrap", "20"]
    assert run_eval(*common, "--out", str(tmp_path / "refused")) == 2
    with pytest.warns(ZeroShotWarning):
        assert run_eval(*common, "--zero-shot", "--out", str(tmp_path / "zs")) == 0
    report = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    assert report["llscore_model"] == {
        "ckpt": base,
        "folder": str(Path(base).resolve()),
        "zero_shot": True,
        "backend": "transformers",
        "dtype": "float32",
    }
    assert "srcc" in report["overall"]["llscore"]
    assert f"{base} (zero-shot)" in (tmp_path / "zs" / "report.md").read_text().splitlines()[0]


def test_a_bench_is_evaluated_only_on_a_dataset_built_with_its_data_config(mini_bench, prepared, tmp_path):
    bench = Path(shutil.copytree(mini_bench, tmp_path / "bench"))
    assert ensure_prepared(bench) == tmp_path / "bench_prepared"  # built once, canonical config
    assert ensure_prepared(bench) == tmp_path / "bench_prepared"  # reused
    other = tmp_path / "other.yaml"
    other.write_text("seed: 7\n")
    with pytest.raises(DataError, match="built with another data config than --data-config gives"):
        ensure_prepared(bench, other)
    with pytest.raises(DataError, match="drop --data-config"):
        ensure_prepared(prepared, other)


def assert_close(one, two, where="metrics.json"):
    """Equal structure and text; numbers equal to 1e-4."""
    assert type(one) is type(two) or {type(one), type(two)} <= {int, float}, where
    if isinstance(one, dict):
        assert list(one) == list(two), where
        for key in one:
            assert_close(one[key], two[key], f"{where}/{key}")
    elif isinstance(one, list):
        assert len(one) == len(two), where
        for k, (a, b) in enumerate(zip(one, two, strict=True)):
            assert_close(a, b, f"{where}/{k}")
    elif isinstance(one, float):
        assert two == pytest.approx(one, rel=1e-4, abs=1e-4, nan_ok=True), where
    else:
        assert one == two, where


@pytest.mark.slow
def test_two_processes_score_each_image_once_and_match_one_process(llscore_checkpoints, prepared, tmp_path):
    """`accelerate launch --num_processes 2 eval.py` writes the scores.csv and metrics.json of one process."""
    common = [
        "--ckpt",
        str(llscore_checkpoints["qwen2_5_vl"]),
        "--data",
        str(prepared),
        "--baselines",
        "psnr",
    ]
    common += ["--batch-size", "4", "--bootstrap", "50", "--cache-dir", str(tmp_path / "cache")]
    outputs = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        run = accelerate_launch(["eval.py", *common, "--out", str(out)], processes)
        assert run.returncode == 0, run.stderr[-3000:]
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics.pop("processes") == processes  # each CPU process knows the others: no lone copies
        metrics.pop("wall_time_s")
        outputs[processes] = (metrics, pd.read_csv(out / "scores.csv"))
    # Batches of another composition move float32 scores in the 7th digit, nothing more.
    pd.testing.assert_frame_equal(outputs[1][1], outputs[2][1], check_exact=False, rtol=1e-5, atol=1e-6)
    assert_close(outputs[1][0], outputs[2][0])
    assert len(outputs[2][1]) == len(load_eval_data(prepared, "test").images)


def test_an_earlier_report_is_kept_unless_overwrite(prepared, tmp_path, capsys):
    out = tmp_path / "report"
    common = ("--data", str(prepared), "--baselines", "psnr", "--bootstrap", "20", "--out", str(out))
    assert run_eval(*common) == 0
    (out / "report.md").write_text("my edited report")
    capsys.readouterr()
    assert run_eval(*common) == 2
    assert "already holds a report" in capsys.readouterr().err
    assert (out / "report.md").read_text() == "my edited report"
    assert run_eval(*common, "--overwrite") == 0
    assert (out / "report.md").read_text().startswith("# LL-Score evaluation")


def test_overwrite_replaces_the_earlier_reports_own_files_only(prepared, tmp_path):
    """An earlier run's plot that this run does not draw goes with its report; the user's own files stay."""
    out = tmp_path / "report"
    common = ("--data", str(prepared), "--baselines", "psnr", "--bootstrap", "0", "--out", str(out))
    assert run_eval(*common) == 0
    (out / "hallucination_reliability.png").write_bytes(b"an earlier run's plot (it scored a checkpoint)")
    (out / "my_notes.md").write_text("mine")
    (out / "my_plot.png").write_bytes(b"mine")
    assert run_eval(*common, "--overwrite") == 0
    assert not (out / "hallucination_reliability.png").exists()
    assert (out / "my_notes.md").read_text() == "mine" and (out / "my_plot.png").read_bytes() == b"mine"
    assert {"report.md", "metrics.json", "scores.csv", "scatter_vs_human.png"} <= {
        p.name for p in out.iterdir()
    }


def test_a_full_disk_is_one_line_and_leaves_no_partial_report(prepared, tmp_path, capsys, monkeypatch):
    import errno

    from llscore import files

    mkstemp = files.tempfile.mkstemp

    def full_disk(*args, prefix="", **kwargs):
        if prefix.startswith(".report.md."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return mkstemp(*args, prefix=prefix, **kwargs)

    out = tmp_path / "report"
    common = ("--data", str(prepared), "--baselines", "psnr", "--bootstrap", "0", "--out", str(out))
    with monkeypatch.context() as patch:
        patch.setattr(files.tempfile, "mkstemp", full_disk)
        assert run_eval(*common) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "report.md" in err[-1] and "no space" in err[-1] and "Traceback" not in "\n".join(err)
    assert not out.exists() or list(out.iterdir()) == []  # nothing half-written, nothing to block the rerun
    assert run_eval(*common) == 0
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    with monkeypatch.context() as patch:
        patch.setattr(files.tempfile, "mkstemp", full_disk)
        assert run_eval(*common, "--overwrite") == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier  # the earlier report, whole


@pytest.mark.parametrize(
    ("flag", "value"), [("--bootstrap", "-5"), ("--batch-size", "0"), ("--batch-size", "2.5")]
)
def test_a_bad_count_is_one_usage_line(prepared, tmp_path, capsys, flag, value):
    assert (
        run_eval("--data", str(prepared), "--baselines", "psnr", "--out", str(tmp_path / "o"), flag, value)
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert flag in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "o").exists()


def test_an_image_deleted_from_the_bench_is_one_line_naming_it(
    mini_bench, llscore_checkpoints, tmp_path, capsys
):
    bench = shutil.copytree(mini_bench, tmp_path / "bench")
    prepared = build_dataset(bench, tmp_path / "prepared")
    gone = load_eval_data(prepared, "test").images["restored"].iloc[0]
    Path(gone).unlink()
    ckpt = str(llscore_checkpoints["qwen2_5_vl"])
    args = ("--ckpt", ckpt, "--data", str(prepared), "--baselines", "none", "--out", str(tmp_path / "o"))
    assert run_eval(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert Path(gone).name in err[-1] and "Traceback" not in "\n".join(err)
