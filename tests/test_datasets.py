"""Datasets through adapters (docs/data_contract.md, "Other datasets"): PIPAL and KADID-10k laid out as their
releases are, evaluated whole by eval.py; a bench without the optional tables; bad input as one line."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats
from test_eval import run_eval

from llscore.data import schema
from llscore.data.adapters import KADID_TYPES, read_dataset
from llscore.data.build import build_dataset
from llscore.errors import DataError
from llscore.evaluation import Evaluators, evaluate, load_eval_data
from llscore.report import markdown_report

SIDE = 64


def scene(rng: np.random.Generator) -> np.ndarray:
    """A smooth random picture with some texture (not flat: the distortions must change it)."""
    coarse = rng.uniform(0, 255, (8, 8, 3))
    smooth = np.asarray(
        Image.fromarray(coarse.astype(np.uint8)).resize((SIDE, SIDE), Image.Resampling.BICUBIC)
    )
    return np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255)


def distorted(clean: np.ndarray, strength: float, rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(np.clip(clean + rng.normal(0, strength, clean.shape), 0, 255).astype(np.uint8))


def write_pipal(root: Path, n_refs: int = 3, per_ref: int = 4) -> dict[str, float]:
    """PIPAL's training release in miniature: Train_Ref/A0001.bmp, Train_Label/A0001.txt of name,score lines,
    the distorted images split over Distortion_1/ and Distortion_2/ as the download splits them; returns the
    Elo score of each distorted image."""
    rng = np.random.default_rng(1)
    (root / "Train_Ref").mkdir(parents=True)
    (root / "Train_Label").mkdir()
    scores = {}
    for r in range(1, n_refs + 1):
        reference = f"A{r:04d}"
        clean = scene(rng)
        Image.fromarray(clean.astype(np.uint8)).save(root / "Train_Ref" / f"{reference}.bmp")
        lines = []
        for k in range(per_ref):
            name = f"{reference}_{k:02d}_00.bmp"
            folder = root / f"Distortion_{1 + (r + k) % 2}"
            folder.mkdir(exist_ok=True)
            distorted(clean, 4 + 12 * k, rng).save(folder / name)
            scores[name] = round(1600 - 70 * k + rng.normal(0, 25), 4)
            lines.append(f"{name},{scores[name]}")
        (root / "Train_Label" / f"{reference}.txt").write_text("\n".join(lines) + "\n")
    return scores


def write_kadid(root: Path, n_refs: int = 3, types=("01", "11"), levels=(1, 2, 3)) -> pd.DataFrame:
    """KADID-10k in miniature: images/I01.png, images/I01_01_01.png ... and dmos.csv (dist_img,ref_img,dmos,var)."""
    rng = np.random.default_rng(2)
    (root / "images").mkdir(parents=True)
    rows = []
    for r in range(1, n_refs + 1):
        reference = f"I{r:02d}.png"
        clean = scene(rng)
        Image.fromarray(clean.astype(np.uint8)).save(root / "images" / reference)
        for kind in types:
            for level in levels:
                name = f"I{r:02d}_{kind}_{level:02d}.png"
                strength = 5 * level + int(kind)
                distorted(clean, strength, rng).save(root / "images" / name)
                dmos = round(4.8 - 0.15 * strength + rng.normal(0, 0.2), 3)
                rows.append(
                    {
                        "dist_img": name,
                        "ref_img": reference,
                        "dmos": dmos,
                        "var": round(rng.uniform(0.1, 1), 3),
                    }
                )
    table = pd.DataFrame(rows)
    table.to_csv(root / "dmos.csv", index=False)
    return table


@pytest.fixture(scope="module")
def pipal(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    root = tmp_path_factory.mktemp("pipal") / "PIPAL"
    return root, write_pipal(root)


@pytest.fixture(scope="module")
def kadid(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("kadid") / "kadid10k"
    return root, write_kadid(root)


def test_pipal_and_kadid_read_into_the_images_table_with_the_reference_as_input(pipal, kadid):
    root, elo = pipal
    data = read_dataset("pipal", root)
    images = data.images.set_index("image_id")
    assert set(images.index) == set(elo) and data.full_reference
    assert images["score"].to_dict() == elo
    assert (images["degraded"] == images["reference"]).all()
    first = images.loc["A0002_01_00.bmp"]
    assert first["reference"] == str(root.resolve() / "Train_Ref/A0002.bmp") and first["source_id"] == "A0002"
    assert Path(first["restored"]).parent.name in ("Distortion_1", "Distortion_2") and first["task"] == "01"
    assert data.absent.keys() == {"pairs", "hallucination"}

    root, table = kadid
    data = read_dataset("kadid10k", root)
    images = data.images.set_index("image_id").loc[table["dist_img"]]
    np.testing.assert_allclose(images["score"], table["dmos"])
    np.testing.assert_allclose(images["std"], np.sqrt(table["var"]))
    assert (images["degraded"].map(lambda p: Path(p).name) == table["ref_img"].to_numpy()).all()
    assert (images["degraded"] == images["reference"]).all()
    assert images.loc["I02_11_03.png", "model"] == KADID_TYPES["11"][0] == "white_noise"
    assert images.loc["I02_11_03.png", "task"] == "noise" and images.loc["I01_01_01.png", "task"] == "blur"
    assert set(images["source_id"]) == {"I01", "I02", "I03"}


@pytest.mark.parametrize("dataset", ["pipal", "kadid10k"])
def test_eval_py_measures_a_dataset_whole_and_says_what_it_skips(
    dataset, pipal, kadid, llscore_checkpoints, tmp_path, capsys
):
    root = {"pipal": pipal, "kadid10k": kadid}[dataset][0]
    out = tmp_path / "out"
    ckpt = llscore_checkpoints["qwen2_5_vl"]
    args = ["--ckpt", str(ckpt), "--dataset", dataset, "--data-dir", str(root), "--baselines", "psnr,ssim"]
    assert (
        run_eval(*args, "--bootstrap", "20", "--out", str(out), "--cache-dir", str(tmp_path / "cache")) == 0
    )
    printed = capsys.readouterr().out
    assert "skipped, the data lacks what they need" in printed and "pairwise" in printed
    report = json.loads((out / "metrics.json").read_text())
    scores = pd.read_csv(out / "scores.csv")
    truth = read_dataset(dataset, root).images.set_index("image_id")["score"]
    assert report["split"] == "all" and report["n_images"] == len(truth) == len(scores)
    np.testing.assert_allclose(scores["human_score"], truth.loc[scores["image_id"]])
    assert scores["llscore"].nunique() > 3  # the tiny model's scores vary: the comparisons below can fail
    for name in ("llscore", "psnr@ref", "ssim@ref"):  # scores.csv holds float32 scores to 7 digits
        measured, pred = report["overall"][name], scores[name].to_numpy()
        human = scores["human_score"].to_numpy()
        assert measured["srcc"] == pytest.approx(stats.spearmanr(pred, human).statistic, abs=1e-5)
        assert measured["plcc"] == pytest.approx(stats.pearsonr(pred, human).statistic, abs=1e-5)
        assert measured["krcc"] == pytest.approx(stats.kendalltau(pred, human).statistic, abs=1e-5)
        assert math.isfinite(measured["plcc_logistic"]) and len(measured["srcc_ci"]) == 2
    assert report["overall"]["psnr@ref"]["srcc"] > 0.5  # the fixture's scores fall as noise rises
    assert not any(name.endswith("@input") for name in report["overall"])  # the input is the reference
    assert not {"restoration_strength", "restorer_prior"} & set(report["overall"])
    skipped = report["skipped"]
    assert {"pairwise", "hallucination", "restoration_strength", "restorer_prior"} <= set(skipped)
    assert "no pairs table" in skipped["pairwise"] and "no hallucination table" in skipped["hallucination"]
    assert not any(key.startswith(("pairwise", "vote")) for key in report["overall"]["llscore"])
    assert not {"hallucination", "human_ceiling", "unseen_restorers", "per_family"} & set(report)
    assert report["full_reference"] is True and report["data"]["images_scored"] == len(truth)
    text = (out / "report.md").read_text()
    assert "## Skipped" in text and "Pairwise accuracy per task" not in text and "full-reference" in text
    assert "| SRCC | PLCC | PLCC (logistic) | KRCC | within-source SRCC |\n" in text  # no pairwise columns


def test_a_bench_without_the_optional_tables_builds_and_evaluates(mini_bench, tmp_path):
    bench = Path(shutil.copytree(mini_bench, tmp_path / "bench"))
    for file in (schema.PAIRS, schema.HALLUCINATION, schema.RANKINGS):
        (bench / file).unlink()
    prepared = build_dataset(bench, tmp_path / "prepared")
    assert json.loads((prepared / "report.json").read_text())["absent_tables"] == [
        "pairs",
        "hallucination",
        "rankings",
    ]
    data = load_eval_data(prepared, "test")
    assert data.pairs.empty and data.images["hallucination"].isna().all()
    human = data.images["human_score"].to_numpy()
    report = evaluate(data, Evaluators({"oracle": human}, p_hallucination=np.full(len(human), 0.5)), n_boot=0)
    assert report["overall"]["oracle"]["srcc"] == pytest.approx(1.0)
    assert "pairwise_acc" not in report["overall"]["oracle"]
    assert set(report["skipped"]) == {"pairwise", "hallucination"}
    assert schema.PAIRS in report["skipped"]["pairwise"]
    assert "hallucination" not in report and "human_ceiling" not in report and "per_family" in report
    assert "## Skipped" in markdown_report(report, "t")
    full = evaluate(
        load_eval_data(build_dataset(mini_bench, tmp_path / "whole"), "test"), Evaluators({"o": human})
    )
    assert full["skipped"] == {} and "human_ceiling" in full  # LL-Bench whole skips nothing


def test_bad_pipal_and_kadid_input_is_one_line_naming_file_line_and_column(tmp_path, capsys):
    kadid = tmp_path / "kadid"
    table = write_kadid(kadid, n_refs=1, types=("01",), levels=(1, 2))
    table.drop(columns="dmos").to_csv(kadid / "dmos.csv", index=False)
    with pytest.raises(
        DataError, match=r"^dmos\.csv, line 1: missing column 'dmos'; columns found: \['dist_img'"
    ):
        read_dataset("kadid10k", kadid)
    table.assign(dmos=["4.1", "high"]).to_csv(kadid / "dmos.csv", index=False)
    with pytest.raises(
        DataError, match=r"^dmos\.csv, line 3, column 'dmos': dmos 'high' is not a finite number"
    ):
        read_dataset("kadid10k", kadid)
    table.to_csv(kadid / "dmos.csv", index=False)
    (kadid / "images" / table["dist_img"][1]).unlink()
    message = rf"dmos\.csv, line 3, column 'dist_img': image file not found: images/{table['dist_img'][1]}"
    with pytest.raises(DataError, match=rf"^{message}$"):
        read_dataset("kadid10k", kadid)
    assert (
        run_eval(
            "--dataset",
            "kadid10k",
            "--data-dir",
            str(kadid),
            "--baselines",
            "psnr",
            "--out",
            str(tmp_path / "o"),
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("eval.py: error: dmos.csv, line 3") and len(err.splitlines()) == 1

    pipal = tmp_path / "pipal"
    write_pipal(pipal, n_refs=2, per_ref=2)
    label = pipal / "Train_Label/A0002.txt"
    lines = label.read_text().splitlines()
    label.write_text(f"{lines[0]}\n{lines[1].split(',')[0]},n/a\n")
    with pytest.raises(DataError, match=r"^Train_Label/A0002\.txt, line 2, column 'score': score 'n/a'"):
        read_dataset("pipal", pipal)
    label.write_text(f"{lines[0]}\nA0002_07_00.bmp,1500\n")
    with pytest.raises(
        DataError,
        match=r"^Train_Label/A0002\.txt, line 2, column 'name': distorted image A0002_07_00\.bmp not found",
    ):
        read_dataset("pipal", pipal)
    label.write_text("\n".join(lines) + "\n")
    (pipal / "Train_Ref/A0001.bmp").unlink()
    with pytest.raises(
        DataError, match=r"^Train_Label/A0001\.txt, line 1, column 'name': its reference A0001"
    ):
        read_dataset("pipal", pipal)
    shutil.rmtree(pipal / "Train_Label")
    with pytest.raises(
        DataError, match=r"no Train_Label/ folder in .*pipal; PIPAL's release holds Train_Ref/"
    ):
        read_dataset("pipal", pipal)
    for args, message in (
        (["--dataset", "pipal"], "--dataset pipal needs --data-dir: its release folder (Train_Ref/"),
        (["--dataset", "pipal", "--data-dir", str(pipal), "--split", "test"], "--split is LL-Bench's"),
        (["--dataset", "pipal", "--data-dir", str(tmp_path / "none")], "pipal folder not found"),
    ):
        assert run_eval(*args, "--baselines", "psnr", "--out", str(tmp_path / "o")) == 2
        assert message in capsys.readouterr().err
