"""The real-data on-ramp: LL-Bench from a (stand-in) Hub, its column map inferred and confirmed, provenance."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_hub import FakeHub, client_pointed_at
from huggingface_hub import HfApi, constants
from scripts import load_script

from llscore.data import schema
from llscore.data.column_map import UNDECIDED, ColumnMapError, check_column_map, proposed_config
from llscore.data.config import TABLES, DataConfig
from llscore.data.hub_bench import hub_dataset_id
from llscore.data.inputs import local_bench
from llscore.data.prepared import load_prepared
from llscore.errors import DataError

TOKEN = "hf_fakeTokenForTheDatasetTests000000"
RENAMED = {
    "images": {
        **dict(image_id="img", path="file_path", kind="role", source_id="src", task="degradation"),
        **dict(model="method", model_family="family", scene="photo"),
    },
    "pairs": {
        **dict(source_id="source", image_a="first_image", image_b="second_image", preference="winner"),
        **dict(annotator_id="rater", trial_id="session"),
    },
    "scores": dict(image_id="image", score="bt_score", std="sd", n_comparisons="comparisons"),
    "hallucination": dict(image_id="image_name", hallucination="hallucinated", n_votes="votes"),
    "rankings": dict(trial_id="trial", source_id="input_id", annotator_id="worker", ranking="order"),
}
"""A release that names every column its own way (and orders them its own way)."""
BUILD = load_script("data_prep/build_dataset.py")


def renamed_copy(bench: Path, out: Path, renames: dict = RENAMED) -> Path:
    """`bench` with its tables' columns renamed and shuffled, and an image file that no table references."""
    shutil.copytree(bench, out, ignore=shutil.ignore_patterns("*.csv"))
    rng = np.random.default_rng(0)
    for table, file in TABLES.items():
        frame = pd.read_csv(bench / file, dtype=str, keep_default_na=False).rename(columns=renames[table])
        frame[list(rng.permutation(frame.columns))].to_csv(out / file, index=False)
    shutil.copy(next((out / "images").rglob("*.png")), out / "images" / "not_referenced.png")
    return out


@pytest.fixture
def hub(mini_bench, tmp_path):
    """A stand-in Hub serving the renamed release as the dataset repo `llbench/renamed`."""
    with FakeHub(TOKEN) as server, client_pointed_at(server, tmp_path / "hf_home"):
        api = HfApi(token=TOKEN)
        api.create_repo("llbench/renamed", repo_type="dataset")
        release = renamed_copy(mini_bench, tmp_path / "release")
        (release / "bench.json").unlink()
        api.upload_folder(repo_id="llbench/renamed", repo_type="dataset", folder_path=release)
        yield server
        assert not server.unhandled, server.unhandled


def image_downloads(server: FakeHub) -> list[str]:
    return [r for r in server.requests if r.startswith("GET /datasets/") and r.endswith(".png")]


def test_a_hub_release_is_fetched_mapped_confirmed_and_built(hub, mini_bench, tmp_path, capsys):
    files = tmp_path / "llbench"
    build = [
        "--bench",
        "hf://llbench/renamed",
        "--download-dir",
        str(files),
        "--out",
        str(tmp_path / "prepared"),
    ]
    assert BUILD.main(build) == 2  # the canonical column map does not fit: nothing is built from a guess
    err = capsys.readouterr().err
    assert "metadata/images.csv: missing column 'image_id'; columns found: [" in err
    assert "20 more configured column(s) missing" in err and "images.image_id <- img: name ~ image_id" in err
    assert "pairs.image_a <- first_image" in err and "100% of values are image ids" in err
    assert not (tmp_path / "prepared").exists() and not image_downloads(hub), "no image before the map fits"

    proposal = tmp_path / "llbench_renamed.yaml"
    assert BUILD.main([*build, "--write-config", str(proposal)]) == 2
    assert f"review it, then rerun with --config {proposal}" in capsys.readouterr().err
    written = DataConfig.from_yaml(proposal)
    for table, renames in RENAMED.items():
        assert {c: written.columns[table][c] for c in renames} == renames, table

    assert BUILD.main([*build, "--config", str(proposal)]) == 0
    referenced = pd.read_csv(mini_bench / schema.IMAGES, dtype=str).path
    assert len(image_downloads(hub)) == len(referenced)
    assert sorted(str(p.relative_to(files)) for p in files.rglob("*.png")) == sorted(referenced)
    record = json.loads((files / "bench.json").read_text())
    assert record["hub_id"] == "llbench/renamed" and len(record["revision"]) == 40
    provenance = load_prepared(tmp_path / "prepared").report["provenance"]
    assert provenance["hub_id"] == "llbench/renamed" and provenance["revision"] == record["revision"]

    before = len(image_downloads(hub))
    again = ["--bench", "hf://llbench/renamed", "--download-dir", str(files), "--config", str(proposal)]
    assert BUILD.main([*again, "--out", str(tmp_path / "again")]) == 0
    assert len(image_downloads(hub)) == before, "a second run fetches no image"


def test_a_pinned_revision_builds_from_its_own_images(hub, mini_bench, tmp_path, monkeypatch):
    """R2 changes an image to other bytes of the same size: a build pinned to R2 holds R2's image, not R1's; a
    file cut short after download is fetched again."""
    from llscore.data.hub_bench import download_bench

    api = HfApi(token=TOKEN)
    config = DataConfig.from_dict({"columns": RENAMED})
    files = tmp_path / "llbench"
    r1 = api.dataset_info("llbench/renamed").sha
    download_bench("llbench/renamed", files, config, revision=r1)
    image = pd.read_csv(files / schema.IMAGES, dtype=str)["file_path"].iloc[-1]
    changed = bytearray((files / image).read_bytes())
    changed[-20] ^= 0xFF  # inside the last chunk: same size, other bytes
    api.upload_file(
        path_or_fileobj=bytes(changed), path_in_repo=image, repo_id="llbench/renamed", repo_type="dataset"
    )
    r2 = api.dataset_info("llbench/renamed").sha
    assert r2 != r1
    download_bench("llbench/renamed", files, config, revision=r2)
    assert (files / image).read_bytes() == bytes(changed)
    assert json.loads((files / "bench.json").read_text())["revision"] == r2

    (files / image).write_bytes(bytes(changed)[:100])  # damaged after download
    download_bench("llbench/renamed", files, config, revision=r2)
    assert (files / image).read_bytes() == bytes(changed)

    # Offline, a complete download is used as it is; an incomplete one is named as such.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert download_bench("llbench/renamed", files, config, revision=r2) == files
    (files / image).unlink()
    with pytest.raises(DataError, match=r"1 referenced image\(s\) are missing.*Hub cannot be reached"):
        download_bench("llbench/renamed", files, config, revision=r2)


def test_a_gated_or_missing_dataset_is_one_clear_line(hub, tmp_path, capsys):
    out = ["--download-dir", str(tmp_path / "d"), "--out", str(tmp_path / "p")]
    assert BUILD.main(["--bench", "hf://llbench/nope", *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "llbench/nope: no such dataset on the Hub, or it is private" in err[0]
    hub.repos["datasets/llbench/renamed"].gated = True
    assert BUILD.main(["--bench", "hf://llbench/renamed", *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "llbench/renamed is gated: accept its terms at" in err[0] and "HF_TOKEN" in err[0]
    )


def test_ambiguous_and_missing_columns_are_named_and_never_guessed(mini_bench, tmp_path):
    renames = {**RENAMED, "pairs": {**RENAMED["pairs"], "image_a": "x1", "image_b": "x2"}}
    bench = renamed_copy(mini_bench, tmp_path / "bench", renames)
    pairs = pd.read_csv(bench / schema.PAIRS, dtype=str).drop(columns=["winner"])
    pairs.to_csv(bench / schema.PAIRS, index=False)
    with pytest.raises(ColumnMapError) as caught:
        check_column_map(bench, DataConfig())
    choices = {(c.table, c.canonical): c for c in caught.value.choices}
    assert choices["pairs", "image_a"].status == "ambiguous"
    assert set(choices["pairs", "image_a"].rivals) == {"x1", "x2"}
    assert choices["pairs", "preference"].status == "missing"
    assert choices["scores", "score"].column == "bt_score" and choices["scores", "score"].status == "matched"
    config = proposed_config(caught.value.config, caught.value.choices)
    assert config.columns["pairs"]["image_a"].startswith(UNDECIDED)
    with pytest.raises(
        DataError, match=r"leaves columns\.pairs\.image_a, columns\.pairs\.preference undecided"
    ):
        check_column_map(bench, config)  # the proposal passed back unedited still builds nothing


def test_a_network_failure_is_one_clear_line(mini_bench, tmp_path, capsys):
    with FakeHub(TOKEN) as server, client_pointed_at(server, tmp_path / "hf_home"):
        server.stop()  # the Hub cannot be reached
        argv = [
            "--bench",
            "hf://llbench/renamed",
            "--download-dir",
            str(tmp_path / "d"),
            "--out",
            str(tmp_path / "p"),
        ]
        assert BUILD.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("build_dataset.py: error: llbench/renamed: download failed")


def test_only_hf_urls_name_hub_datasets_and_undecided_columns_never_build(mini_bench, tmp_path, monkeypatch):
    assert hub_dataset_id("hf://owner/name") == hub_dataset_id("hf://datasets/owner/name") == "owner/name"
    monkeypatch.chdir(tmp_path)  # a fresh clone: data/ does not exist yet
    assert hub_dataset_id("data/llbench_mini") is None
    with pytest.raises(DataError, match=r"benchmark folder data/llbench_mini not found"):
        local_bench("data/llbench_mini", DataConfig())
    config = DataConfig.from_dict({"columns": {"scores": {"std": UNDECIDED + "sd | se"}}})
    with pytest.raises(DataError, match=r"leaves columns\.scores\.std undecided"):
        check_column_map(mini_bench, config)  # an optional column too: never dropped silently
