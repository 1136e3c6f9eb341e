"""The LL-Bench release's JSONL inference format: `llscore score --jsonl in.jsonl --out out.jsonl`."""

import json
import shutil

import numpy as np
import pytest

from llscore import LLScore
from llscore.cli import main
from llscore.errors import DataError
from llscore.jsonl import read_requests


@pytest.fixture
def release_folder(sample_images, tmp_path):
    """Images in a folder beside the JSONL file, named by relative paths, as the release's examples are."""
    folder = tmp_path / "release"
    for kind in ("restored", "degraded"):
        (folder / kind).mkdir(parents=True)
        for path in sample_images[kind]:
            shutil.copy(path, folder / kind / path.name)
    return folder


def lines_of(sample_images, folder) -> list[dict]:
    return [
        {
            "id": f"case-{i}",
            "task": task,
            "degraded_image": f"degraded/{degraded.name}",
            "restored_image": f"restored/{restored.name}",
        }
        for i, (restored, degraded, task) in enumerate(
            zip(
                sample_images["restored"],
                sample_images["degraded"],
                ("denoise", "deblur", "derain"),
                strict=False,
            )
        )
    ]


def write_jsonl(path, lines) -> None:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


def test_each_line_comes_back_with_its_scores_in_order(
    llscore_checkpoints, sample_images, release_folder, capsys
):
    lines = lines_of(sample_images, release_folder)
    lines[1]["degraded_image"] = str(
        (release_folder / lines[1]["degraded_image"]).resolve()
    )  # absolute stays
    lines[2]["extra"] = {"kept": True}  # fields of the user's own are kept
    write_jsonl(release_folder / "in.jsonl", [lines[0], "", lines[1], lines[2]])  # a blank line is no line
    out = release_folder / "out.jsonl"
    ckpt = str(llscore_checkpoints["qwen2_5_vl"])
    assert (
        main(["score", "--ckpt", ckpt, "--jsonl", str(release_folder / "in.jsonl"), "--out", str(out)]) == 0
    )
    scored = [json.loads(text) for text in out.read_text().splitlines()]
    assert [line["id"] for line in scored] == ["case-0", "case-1", "case-2"]
    assert [line["task"] for line in scored] == ["denoise", "deblur", "derain"]
    assert scored[2]["extra"] == {"kept": True} and scored[1]["degraded_image"] == lines[1]["degraded_image"]
    expected = LLScore.from_pretrained(ckpt).score(
        sample_images["restored"][:3], sample_images["degraded"][:3]
    )
    np.testing.assert_allclose([line["quality_score"] for line in scored], expected.score, atol=1e-5)
    np.testing.assert_allclose(
        [line["hallucination_prob"] for line in scored], expected.p_hallucination, atol=1e-5
    )
    levels = [key for key in scored[0] if key.startswith("p_")]
    assert len(levels) == 5 and all(abs(sum(line[k] for k in levels) - 1) < 1e-5 for line in scored)
    assert "3 scored lines" in capsys.readouterr().out


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda line: line.pop("restored_image"), r"in\.jsonl line 3: missing field restored_image$"),
        (lambda line: line.update(id="case-0"), r"line 3: id 'case-0' is also the id of line 1$"),
        (
            lambda line: line.update(degraded_image="degraded/none.png"),
            r"line 3: degraded_image 'degraded/none\.png' is not a file",
        ),
    ],
)
def test_a_bad_line_is_one_error_naming_its_number(sample_images, release_folder, damage, message):
    lines = lines_of(sample_images, release_folder)
    damage(lines[2])
    write_jsonl(release_folder / "in.jsonl", lines)
    with pytest.raises(DataError, match=message):
        read_requests(release_folder / "in.jsonl")


def test_lines_end_at_newlines_only_and_a_bom_is_read(sample_images, release_folder):
    """A JSON string may hold U+2028 (our own writer keeps it raw); a file saved with a BOM is still JSONL."""
    lines = lines_of(sample_images, release_folder)
    lines[0]["task"] = "deblur\u2028night"
    text = "".join(json.dumps(line, ensure_ascii=False) + "\r\n" for line in lines)
    (release_folder / "in.jsonl").write_bytes(b"\xef\xbb\xbf" + text.encode())
    requests = read_requests(release_folder / "in.jsonl")
    assert [r.line for r in requests] == [1, 2, 3] and requests[0].fields["task"] == "deblur\u2028night"


def test_the_command_refuses_a_broken_file_before_loading_anything(sample_images, release_folder, capsys):
    lines = lines_of(sample_images, release_folder)
    write_jsonl(release_folder / "in.jsonl", [lines[0], '{"id": "case-1", "task": "deblur",'])
    out = release_folder / "out.jsonl"
    command = [
        "score",
        "--ckpt",
        str(release_folder / "no-model"),
        "--jsonl",
        str(release_folder / "in.jsonl"),
    ]
    assert main([*command, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "in.jsonl line 2: not valid JSON" in error[0] and not out.exists()
    assert main([*command, "--degraded", str(release_folder / "degraded")]) == 2
    assert "each line of --jsonl names its own degraded_image" in capsys.readouterr().err


def test_bytes_ids_and_constants_that_are_not_json_are_named(sample_images, release_folder):
    """A latin-1 byte names its line; ids 1 and "1" are two ids; NaN (which Python's json accepts but JSON has
    not) is refused rather than written back as bare NaN."""
    lines = lines_of(sample_images, release_folder)
    path = release_folder / "in.jsonl"
    text = "".join(json.dumps(line) + "\n" for line in lines)
    path.write_bytes(text.replace("deblur", "d\u00e9blur").encode("latin-1"))
    with pytest.raises(
        DataError, match=r"in\.jsonl line 2: not UTF-8 text \(0xe9 at byte \d+ of the line\)$"
    ):
        read_requests(path)
    lines[0]["id"], lines[1]["id"] = 1, "1"
    write_jsonl(path, lines)
    assert [r.fields["id"] for r in read_requests(path)] == [1, "1", "case-2"]
    lines[2]["id"] = 1
    write_jsonl(path, lines)
    with pytest.raises(DataError, match=r"line 3: id 1 is also the id of line 1$"):
        read_requests(path)
    lines[2]["id"] = float("nan")
    write_jsonl(path, lines)
    with pytest.raises(DataError, match=r"line 3: not valid JSON \(NaN is not a JSON value\)$"):
        read_requests(path)
