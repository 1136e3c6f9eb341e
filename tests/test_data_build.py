"""LL-Bench -> prepared dataset: validation errors on broken copies, skipping, splits, samples, soft targets."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scripts import load_script

from llscore.config import load_config
from llscore.data import schema
from llscore.data.build import build_dataset
from llscore.data.config import SPLITS, DataConfig
from llscore.data.inputs import ensure_prepared, ensure_training_inputs
from llscore.data.prepared import load_prepared
from llscore.data.samples import Normalisation, soft_targets
from llscore.data.splits import check_splits, make_splits
from llscore.errors import DataError
from llscore.prompts import PromptContract

ROOT = Path(__file__).resolve().parents[1]


def read(bench: Path, table: str) -> pd.DataFrame:
    return pd.read_csv(bench / table, dtype=str, keep_default_na=False)


def write(bench: Path, table: str, df: pd.DataFrame) -> None:
    df.to_csv(bench / table, index=False)


@pytest.fixture(scope="module")
def prepared(mini_bench, tmp_path_factory) -> Path:
    return build_dataset(mini_bench, tmp_path_factory.mktemp("prepared") / "out")


@pytest.fixture
def copy(mini_bench, tmp_path) -> Path:
    """A private copy of LL-Bench-mini to break."""
    return Path(shutil.copytree(mini_bench, tmp_path / "bench"))


def all_rows(dd) -> pd.DataFrame:
    return pd.concat([d.to_pandas().assign(split=s) for s, d in dd.items()], ignore_index=True)


# --- a good build -------------------------------------------------------------------------------------------


def test_build_writes_layout_and_consistent_samples(prepared, mini_bench):
    for name in ("splits.json", "normalisation.json", "stats.md", "report.json", "preview/quality.jsonl"):
        assert (prepared / name).is_file(), name
    data = load_prepared(prepared)
    images = read(mini_bench, schema.IMAGES)
    scores = read(mini_bench, schema.SCORES)
    votes = read(mini_bench, schema.PAIRS)

    quality = all_rows(data.quality)
    assert len(quality) == len(scores) == (images.kind == "restored").sum()
    assert quality.score.between(1, 5).all() and quality.score.min() == 1 and quality.score.max() == 5
    assert {Path(p).is_absolute() and Path(p).is_file() for p in (*quality.restored, *quality.degraded)} == {
        True
    }
    merged = quality.merge(images, on="image_id", suffixes=("", "_csv"))
    assert (merged.model == merged.model_csv).all() and (merged.task == merged.task_csv).all()
    assert all(r.endswith(p) for r, p in zip(merged.restored, merged.path, strict=True))

    pairs = all_rows(data.pairs)
    assert pairs.n_votes.sum() == len(votes)
    assert pairs.p_a_better.between(0, 1).all()
    winner = pairs[["votes_a", "votes_b", "votes_tie"]].to_numpy()
    top = winner.max(axis=1)
    expect = np.where(
        (winner == top[:, None]).sum(axis=1) > 1, "tie", np.array(["a", "b", "tie"])[winner.argmax(axis=1)]
    )
    assert (pairs.majority == expect).all()
    assert not pairs.duplicated(["image_a", "image_b"]).any()

    hall = all_rows(data.hallucination)
    truth = read(mini_bench, schema.HALLUCINATION).astype({"hallucination": float}).set_index("image_id")
    assert np.allclose(hall.set_index("image_id").label, truth.hallucination.loc[hall.image_id])

    assert data.report["skipped"] == {
        "images": 0,
        "rows": 0,
        "rows_by_column": {},
        "duplicate_rows": 0,
        "pairs_without_scores": 0,
    }
    stats = (prepared / "stats.md").read_text()
    for heading in ("Per split", "Per task", "Per model", "Per model family", "Label balance", "agreement"):
        assert heading in stats
    ceiling = data.report["human_agreement"]["all"]["loo_agreement"]
    assert 0.5 < ceiling <= 1


def test_no_source_in_two_splits(prepared):
    data = load_prepared(prepared)
    check_splits(data.splits)
    assert data.splits["seed"] == 0 and data.splits["ratios"] == {"train": 0.7, "val": 0.1, "test": 0.2}
    assert all(len(data.splits[s]) > 0 for s in ("train", "val", "test"))
    for dd in (data.quality, data.pairs, data.hallucination):
        for split, d in dd.items():
            assert set(d["source_id"]) <= set(data.splits[split])


def test_normalisation_round_trips_to_raw_scores(prepared, mini_bench):
    data = load_prepared(prepared)
    quality = all_rows(data.quality).set_index("image_id")
    raw = read(mini_bench, schema.SCORES).set_index("image_id").astype(float)
    norm = Normalisation.from_dict(data.normalisation)
    assert (norm.lo, norm.hi) == (raw.score.min(), raw.score.max()) and norm.lo < norm.hi
    assert np.allclose(norm.from_raw(raw.score.loc[quality.index]), quality.score)
    assert np.allclose(norm.std_from_raw(raw["std"].loc[quality.index]), quality["std"])
    assert Normalisation.from_dict(norm.to_dict()) == norm


def test_soft_targets_sum_to_one_and_mean_is_the_score(prepared):
    weights = np.array(PromptContract().level_weights)
    quality = all_rows(load_prepared(prepared).quality)
    soft = np.stack(quality.soft_target)
    assert soft.shape[1] == len(weights) and (soft >= 0).all()
    assert np.allclose(soft.sum(1), 1, atol=1e-9)
    assert np.abs(soft @ weights - quality.score).max() < 1e-6

    rng = np.random.default_rng(0)
    scores = np.concatenate([[1.0, 5.0, 1 + 1e-9, 5 - 1e-9, 1.05, 4.95, 3.0], rng.uniform(1, 5, 500)])
    stds = np.concatenate([[0.1, 0.1, 3.0, 3.0, 2.0, 0.1, 1e-3], rng.uniform(0.05, 2.5, 500)])
    soft = soft_targets(scores, stds, weights)
    assert (soft >= 0).all() and np.allclose(soft.sum(1), 1, atol=1e-12)
    assert np.abs(soft @ weights - scores).max() < 1e-6
    assert soft[0].argmax() == list(weights).index(1.0) and soft[1].argmax() == list(weights).index(5.0)
    assert np.allclose(soft[6], np.array(weights) == 3.0)  # tiny std at a level: one-hot there
    wide, narrow = soft_targets([3.4, 3.4], [1.5, 0.2], weights)
    assert (wide > 0.01).sum() > (narrow > 0.01).sum()  # the std sets the spread


# --- splits -------------------------------------------------------------------------------------------------


def sources_table(per_task: int) -> pd.DataFrame:
    return pd.DataFrame(
        [(f"s{t:02d}_{i}", f"task{t:02d}") for t in range(16) for i in range(per_task)],
        columns=["source_id", "task"],
    )


def test_same_seed_same_splits_stratified_by_task():
    sources = sources_table(10)
    ratios = {"train": 0.7, "val": 0.1, "test": 0.2}
    a = make_splits(sources, ratios, seed=3)
    assert a == make_splits(
        sources.sample(frac=1, random_state=1), ratios, seed=3
    )  # table order is irrelevant
    assert a != make_splits(sources, ratios, seed=4)
    assert [len(a[s]) for s in ("train", "val", "test")] == [112, 16, 32]
    task = sources.set_index("source_id").task
    for split, share in ratios.items():
        per_task = task.loc[a[split]].value_counts().reindex(task.unique(), fill_value=0)
        assert (abs(per_task - 10 * share) <= 1).all(), (split, per_task.tolist())
    small = make_splits(
        sources_table(1).head(3), ratios, seed=0
    )  # fewer sources than 10: no split left empty
    assert [len(small[s]) for s in ("train", "val", "test")] == [1, 1, 1]


def test_split_with_a_source_twice_is_refused(prepared, tmp_path):
    splits = {"train": ["s1", "s2"], "val": ["s3"], "test": ["s2"]}
    with pytest.raises(DataError, match=r"appear more than once.*'s2': \['train', 'test'\]"):
        check_splits(splits)
    tampered = Path(shutil.copytree(prepared, tmp_path / "p"))
    split = json.loads((tampered / "splits.json").read_text())
    split["test"].append(split["train"][0])
    (tampered / "splits.json").write_text(json.dumps(split))
    with pytest.raises(DataError, match=r"splits\.json"):
        load_prepared(tampered)


# --- broken copies ------------------------------------------------------------------------------------------


def test_missing_column(copy):
    write(copy, schema.IMAGES, read(copy, schema.IMAGES).drop(columns="kind"))
    with pytest.raises(
        DataError, match=r"metadata/images.csv: missing column 'kind'; columns found: \['image_id'"
    ):
        build_dataset(copy, copy.parent / "out")
    assert not (copy.parent / "out").exists()


@pytest.mark.parametrize("table, column", [(schema.SCORES, "score"), (schema.IMAGES, "model")])
def test_a_repeated_column_name_is_refused(copy, table, column):
    """pandas renames the second to 'score.1', so the build would read the first one without a word."""
    df = read(copy, table)
    write(copy, table, pd.concat([df, df[[column]]], axis=1))
    with pytest.raises(
        DataError, match=rf"^{table}, line 1, column '{column}': 2 columns are named '{column}'"
    ):
        build_dataset(copy, copy.parent / "out")


def test_unknown_image_id(copy, tmp_path):
    pairs = read(copy, schema.PAIRS)
    pairs.loc[3, "image_b"] = "no_such_image"
    write(copy, schema.PAIRS, pairs)
    with pytest.raises(DataError) as e:
        build_dataset(copy, tmp_path / "out")
    assert str(e.value).startswith(
        f"{schema.PAIRS}, line 5, column 'image_b': unknown image id 'no_such_image'"
    )
    out = build_dataset(copy, tmp_path / "out", on_bad_row="skip")
    data = load_prepared(out)
    assert data.report["skipped"]["rows"] == 1
    assert data.report["skipped_rows"][0] == {
        "file": schema.PAIRS,
        "line": 5,
        "column": "image_b",
        "reason": f"unknown image id 'no_such_image' (not in {schema.IMAGES})",
    }
    assert sum(data.report["counts"]["pair_votes"].values()) == len(pairs) - 1


def image_row(bench: Path, kind: str = "restored") -> tuple[int, pd.Series]:
    images = read(bench, schema.IMAGES)
    index = images.index[images.kind == kind][4]
    return index + 2, images.loc[index]


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated"])
def test_bad_image_file(copy, tmp_path, damage):
    line, row = image_row(copy)
    path = copy / row.path
    if damage == "missing":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"this is not a png")
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    reason = {"missing": "image file not found", "garbage": "cannot decode", "truncated": "cannot decode"}[
        damage
    ]
    with pytest.raises(DataError, match=rf"^{schema.IMAGES}, line {line}, column 'path': {reason}"):
        build_dataset(copy, tmp_path / "out")

    data = load_prepared(build_dataset(copy, tmp_path / "out", on_bad_image="skip"))
    assert data.report["skipped"]["images"] == 1
    assert data.report["skipped_images"][0]["image_id"] == row.image_id
    assert data.report["skipped_images"][0]["reason"].startswith(reason)
    n_restored = (read(copy, schema.IMAGES).kind == "restored").sum()
    quality = all_rows(data.quality)
    assert len(quality) == n_restored - 1 and row.image_id not in set(quality.image_id)
    pairs = all_rows(data.pairs)
    assert row.image_id not in {*pairs.image_a, *pairs.image_b}
    referencing = read(copy, schema.PAIRS).pipe(
        lambda p: (p.image_a == row.image_id) | (p.image_b == row.image_id)
    )
    assert pairs.n_votes.sum() == len(referencing) - referencing.sum()
    assert data.report["skipped"]["rows_by_column"][f"{schema.PAIRS} [image_a]"] > 0


def test_bad_degraded_image_drops_its_source(copy, tmp_path):
    _, row = image_row(copy, "degraded")
    (copy / row.path).write_bytes(b"")
    data = load_prepared(build_dataset(copy, tmp_path / "out", on_bad_image="skip"))
    in_source = (read(copy, schema.IMAGES).source_id == row.source_id).sum()
    assert data.report["skipped"]["images"] == in_source
    assert data.report["counts"]["sources"] == 15
    assert row.source_id not in {s for split in ("train", "val", "test") for s in data.splits[split]}


def test_nan_score(copy, tmp_path):
    scores = read(copy, schema.SCORES)
    scores.loc[1, "score"] = "nan"
    write(copy, schema.SCORES, scores)
    with pytest.raises(
        DataError, match=rf"^{schema.SCORES}, line 3, column 'score': score 'nan' is not a finite"
    ):
        build_dataset(copy, tmp_path / "out")
    data = load_prepared(build_dataset(copy, tmp_path / "out", on_bad_row="skip"))
    assert len(all_rows(data.quality)) == len(scores) - 1
    assert data.report["skipped"]["rows_by_column"] == {f"{schema.SCORES} [score]": 1}
    unscored = scores.loc[1, "image_id"]
    pairs = all_rows(data.pairs)
    assert not ((pairs.image_a == unscored) | (pairs.image_b == unscored)).any()
    assert (
        data.report["skipped"]["pairs_without_scores"] == 9
    )  # the image's pairs with the 9 other restorations


def test_pair_across_two_sources_and_self_pair(copy, tmp_path):
    pairs = read(copy, schema.PAIRS)
    images = read(copy, schema.IMAGES)
    other = images[(images.kind == "restored") & (images.source_id != pairs.source_id[0])].image_id.iloc[0]
    broken = pairs.copy()
    broken.loc[7, "image_b"] = broken.loc[7, "image_a"]
    write(copy, schema.PAIRS, broken)
    with pytest.raises(DataError, match=rf"^{schema.PAIRS}, line 9, column 'image_b': self-pair"):
        build_dataset(copy, tmp_path / "out")
    broken = pairs.copy()
    broken.loc[0, "image_b"] = other
    write(copy, schema.PAIRS, broken)
    message = rf"^{schema.PAIRS}, line 2, column 'image_b': image_b '{other}' belongs to source '.+', not '{pairs.source_id[0]}'"
    with pytest.raises(DataError, match=message):
        build_dataset(copy, tmp_path / "out")
    data = load_prepared(build_dataset(copy, tmp_path / "out", on_bad_row="skip"))
    assert data.report["skipped"]["rows_by_column"] == {f"{schema.PAIRS} [image_b]": 1}


def test_renamed_columns_with_a_column_map(copy, tmp_path, prepared):
    renames = {
        schema.IMAGES: {"image_id": "img", "path": "file", "kind": "type", "source_id": "src"},
        schema.PAIRS: {
            "source_id": "src",
            "image_a": "left_img",
            "image_b": "right_img",
            "preference": "winner",
        },
        schema.SCORES: {"image_id": "img", "score": "bt_score", "std": "bt_std"},
        schema.HALLUCINATION: {"image_id": "img", "hallucination": "halluc_frac"},
    }
    for table, mapping in renames.items():
        write(copy, table, read(copy, table).rename(columns=mapping))
    pairs = read(copy, schema.PAIRS)
    write(copy, schema.PAIRS, pairs.assign(winner=pairs.winner.map({"a": "0", "b": "1", "tie": "0.5"})))
    with pytest.raises(DataError, match=r"missing column 'image_id'; columns found: \['img', 'file', 'type'"):
        build_dataset(copy, tmp_path / "out")

    tables = {
        schema.IMAGES: "images",
        schema.PAIRS: "pairs",
        schema.SCORES: "scores",
        schema.HALLUCINATION: "hallucination",
    }
    config = DataConfig.from_dict(
        {
            "columns": {tables[t]: m for t, m in renames.items()},
            "vocab": {"preference": {"a": ["0"], "b": ["1"], "tie": ["0.5"]}},
        }
    )
    mapped, canonical = load_prepared(build_dataset(copy, tmp_path / "out", config)), load_prepared(prepared)
    assert mapped.splits == canonical.splits
    for kind in ("quality", "pairs", "hallucination"):
        a, b = all_rows(getattr(mapped, kind)), all_rows(getattr(canonical, kind))
        paths = [
            c for c in a.columns if c in ("degraded", "restored", "reference", "restored_a", "restored_b")
        ]
        pd.testing.assert_frame_equal(a.drop(columns=paths), b.drop(columns=paths))


def test_hallucination_votes_as_rows_and_optional_columns_absent(copy, tmp_path, prepared):
    fractions = read(copy, schema.HALLUCINATION).astype({"hallucination": float, "n_votes": int})
    yes = np.round(fractions.hallucination * fractions.n_votes).astype(int)
    votes = pd.DataFrame(
        {
            "image_id": fractions.image_id.repeat(fractions.n_votes).to_numpy(),
            "hallucination": [
                w for y, n in zip(yes, fractions.n_votes, strict=True) for w in ["yes"] * y + ["0"] * (n - y)
            ],
        }
    )
    write(copy, schema.HALLUCINATION, votes.sample(frac=1, random_state=0))  # one 0/1 (or yes) row per vote
    write(copy, schema.SCORES, read(copy, schema.SCORES)[["image_id", "score"]])
    data = load_prepared(build_dataset(copy, tmp_path / "out", DataConfig(default_std=0.7)))
    hall = all_rows(data.hallucination).set_index("image_id").sort_index()
    reference = all_rows(load_prepared(prepared).hallucination).set_index("image_id").sort_index()
    assert np.allclose(hall.label, reference.label) and (hall.n_votes == reference.n_votes).all()
    assert data.report["duplicate_rows"] == []
    quality = all_rows(data.quality)
    assert (quality["std"] == 0.7).all()
    assert np.abs(np.stack(quality.soft_target) @ PromptContract().level_weights - quality.score).max() < 1e-6


def test_duplicate_rows_are_reported_and_dropped(copy, tmp_path):
    pairs = read(copy, schema.PAIRS)
    write(copy, schema.PAIRS, pd.concat([pairs, pairs.iloc[[2]]], ignore_index=True))
    data = load_prepared(build_dataset(copy, tmp_path / "out"))
    assert data.report["duplicate_rows"] == [
        {"file": schema.PAIRS, "line": len(pairs) + 2, "duplicate_of": 4}
    ]
    assert sum(data.report["counts"]["pair_votes"].values()) == len(pairs)


def test_votes_in_both_orders_aggregate_on_one_pair(copy, tmp_path, prepared):
    pairs = read(copy, schema.PAIRS)
    flipped = pairs.rename(columns={"image_a": "image_b", "image_b": "image_a"}).assign(
        preference=pairs.preference.map({"a": "b", "b": "a", "tie": "tie"}), annotator_id="flip"
    )
    write(copy, schema.PAIRS, pd.concat([pairs, flipped[pairs.columns]], ignore_index=True))
    doubled = all_rows(load_prepared(build_dataset(copy, tmp_path / "out")).pairs)
    single = all_rows(load_prepared(prepared).pairs)
    assert len(doubled) == len(single)
    assert (doubled.n_votes == 2 * single.n_votes).all()
    assert np.allclose(doubled.p_a_better, single.p_a_better) and (doubled.majority == single.majority).all()


def test_failed_rebuild_keeps_the_previous_output(copy, tmp_path):
    out = build_dataset(copy, tmp_path / "out")
    before = (out / "splits.json").read_text()
    (copy / schema.SCORES).write_text("image_id,score\nnope,1\n")
    with pytest.raises(DataError, match="unknown image id 'nope'"):
        build_dataset(copy, out, overwrite=True)
    assert (out / "splits.json").read_text() == before and load_prepared(out).quality["train"].num_rows > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench", "out"]  # no temporary folders left behind


def test_a_rebuild_replaces_only_a_prepared_dataset_and_only_when_asked(mini_bench, tmp_path):
    out = build_dataset(mini_bench, tmp_path / "out")
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not the private mode of a temporary folder
    with pytest.raises(DataError, match="already holds a prepared dataset; pass --overwrite"):
        build_dataset(mini_bench, out)
    assert build_dataset(mini_bench, out, overwrite=True) == out
    (out / "my_notes.txt").write_text("keep me")
    with pytest.raises(DataError, match=r"not part of a prepared dataset \(my_notes.txt\); refusing"):
        build_dataset(mini_bench, out, overwrite=True)
    assert (out / "my_notes.txt").read_text() == "keep me" and load_prepared(out).quality["train"].num_rows
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('mine')\n")
    (project / "report.json").write_text("{}")
    with pytest.raises(DataError, match=r"\(src\); refusing to replace it"):
        build_dataset(mini_bench, project, overwrite=True)
    assert (project / "src" / "main.py").is_file()
    lookalike = tmp_path / "lookalike"
    lookalike.mkdir()
    (lookalike / "report.json").write_text('{"mine": true}')
    with pytest.raises(DataError, match="not a complete prepared dataset"):
        build_dataset(mini_bench, lookalike, overwrite=True)
    assert (lookalike / "report.json").read_text() == '{"mine": true}'
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        build_dataset(mini_bench, tmp_path / "a_file")
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "data_prep/build_dataset.py"),
            "--bench",
            str(mini_bench),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "my_notes.txt" in run.stderr


@pytest.mark.parametrize("table", [schema.HALLUCINATION, schema.PAIRS])
def test_a_header_only_table_gives_empty_splits_that_load(copy, tmp_path, table):
    header = (copy / table).read_text().splitlines()[0]
    (copy / table).write_text(header + "\n")
    data = load_prepared(build_dataset(copy, tmp_path / "out"))
    kind = "hallucination" if table == schema.HALLUCINATION else "pairs"
    assert {split: len(rows) for split, rows in getattr(data, kind).items()} == dict.fromkeys(SPLITS, 0)
    assert data.quality["train"].num_rows > 0


def test_config_rejects_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match=r"unknown data config keys \['ratio'\]; valid keys: \[.*'ratios'"):
        DataConfig.from_dict({"ratio": {"train": 1.0}})
    with pytest.raises(ValueError, match=r"unknown columns of table 'scores' \['scroe'\]"):
        DataConfig.from_dict({"columns": {"scores": {"scroe": "x"}}})
    with pytest.raises(ValueError, match="sum to 1"):
        DataConfig(ratios={"train": 0.5, "val": 0.1, "test": 0.1})
    (tmp_path / "c.yaml").write_text("seed: 1\nworkers: 2\n")
    with pytest.raises(ValueError, match=r"c.yaml: unknown data config keys \['workers'\]"):
        DataConfig.from_yaml(tmp_path / "c.yaml")
    assert DataConfig.from_yaml(ROOT / "configs/data/llbench.yaml") == DataConfig()


def test_cli(copy, tmp_path, capsys):
    cli = load_script("data_prep/build_dataset.py")
    assert cli.main(["--bench", str(copy), "--out", str(tmp_path / "out")]) == 0
    assert "wrote" in capsys.readouterr().out
    (copy / schema.IMAGES).unlink()
    assert cli.main(["--bench", str(copy), "--out", str(tmp_path / "out"), "--overwrite"]) == 2
    assert f"error: {schema.IMAGES}: table not found" in capsys.readouterr().err


def test_bench_script_times_every_stage_of_a_complete_build(capsys):
    (row,) = load_script("bench/bench_dataprep.py").main(["--scales", "0.01", "--workers", "2"])
    assert row["counts"]["images"] == row["images"] > 0  # every generated image reached the prepared dataset
    assert sum(row["counts"]["pairs"].values()) > 0 and row["counts"]["rankings"] == row["rankings"]
    stages = ("read_and_validate_tables", "check_images", "build_samples_and_splits", "write")
    assert all(row[s] > 0 for s in stages) and sum(row[s] for s in stages) <= row["total_s"]
    assert f"| 0.01 | {row['images']} | {row['pairs']} |" in capsys.readouterr().out


def test_data_prep_train_and_eval_share_one_data_config_default(mini_bench, tmp_path, capsys):
    """build_dataset.py without --config, train.py with data_config null and eval.py on a raw bench without
    --data-config all mean the canonical schema: each accepts what the others built, and refuses another."""
    bench = Path(shutil.copytree(mini_bench, tmp_path / "bench"))
    prepared = tmp_path / "bench_prepared"
    assert (
        load_script("data_prep/build_dataset.py").main(["--bench", str(bench), "--out", str(prepared)]) == 0
    )
    built = (prepared / "report.json").stat().st_mtime_ns
    assert ensure_prepared(bench) == prepared  # eval.py --data <bench>: reused, not rebuilt
    ensure_training_inputs(load_config(None, ["--prepared_dir", str(prepared)]))  # train.py
    assert (prepared / "report.json").stat().st_mtime_ns == built
    with pytest.raises(DataError, match="built with another data config than --data-config gives"):
        ensure_prepared(bench, ROOT / "configs/data/llbench_mini.yaml")


def test_scenes_never_cross_splits_and_every_split_gets_several():
    """Sources cut from one photograph stay in one split; a source without a scene is a scene of its own."""
    rng = np.random.default_rng(0)
    sources = pd.DataFrame(
        {
            "source_id": [f"s{i:03d}" for i in range(300)],
            "task": [f"task{i % 16:02d}" for i in range(300)],
            "scene": [f"photo{rng.integers(18):02d}" for _ in range(300)],
        }
    )
    ratios = {"train": 0.6, "val": 0.15, "test": 0.25}
    splits = make_splits(sources, ratios, seed=0)
    assert splits == make_splits(sources.sample(frac=1, random_state=2), ratios, seed=0)
    scene = sources.set_index("source_id").scene
    scenes = {s: set(scene.loc[splits[s]]) for s in ("train", "val", "test")}
    assert not (
        scenes["train"] & scenes["val"] or scenes["train"] & scenes["test"] or scenes["val"] & scenes["test"]
    )
    assert {s: sorted(v) for s, v in scenes.items()} == splits["scenes"]
    assert len(scenes["val"]) >= 2 and len(scenes["test"]) >= 3
    for split, share in ratios.items():
        assert abs(len(splits[split]) / len(sources) - share) < 0.06, split

    mixed = sources.assign(scene=sources.scene.where(sources.index % 3 > 0, ""))
    alone = make_splits(mixed, ratios, seed=0)
    assert (
        sum(name.startswith("source:") for s in ("train", "val", "test") for name in alone["scenes"][s])
        == 100
    )

    tampered = {
        **splits,
        "scenes": {**splits["scenes"], "test": [*splits["scenes"]["test"], splits["scenes"]["train"][0]]},
    }
    with pytest.raises(DataError, match="scenes appear more than once"):
        check_splits(tampered)
    with pytest.raises(DataError, match="2 scene"):
        make_splits(sources.assign(scene=np.where(sources.index % 2, "a", "b")), ratios, seed=0)


def test_mini_bench_splits_by_scene(prepared):
    splits = json.loads((Path(prepared) / "splits.json").read_text())
    assert set(splits["scenes"]) == {"train", "val", "test"}
    images = pd.read_csv(
        Path(json.loads((Path(prepared) / "report.json").read_text())["bench"]) / "metadata/images.csv"
    )
    scene_of = images.drop_duplicates("source_id").set_index("source_id").scene
    for split in ("train", "val", "test"):
        assert set(scene_of.loc[splits[split]]) == set(splits["scenes"][split])


def test_a_dataset_built_for_other_answer_levels_is_refused(prepared):
    data = load_prepared(prepared)
    contract = PromptContract()
    data.check_contract(contract.level_words, contract.level_weights)
    with pytest.raises(DataError, match=r"was built for level words .* rebuild it"):
        data.check_contract(contract.level_words, [1.0, 2.0, 3.0, 4.0, 5.0])
