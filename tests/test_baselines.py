"""llscore.baselines: pyiqa calibration through our code path, unavailable metrics, the per-image cache."""

import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CALIBRATION, shared_or_skip
from PIL import Image

from llscore import baselines as B

CALIBRATED = ("psnr", "ssim", "ms_ssim", "gmsd", "vif", "fsim")


def calibration_items(root):
    names = sorted(p.name for p in (root / "dist_dir").iterdir())
    return pd.DataFrame(
        {
            "image_id": names,
            "restored": [str(root / "dist_dir" / n) for n in names],
            "degraded": None,
            "reference": [str(root / "ref_dir" / n) for n in names],
        }
    )


@pytest.mark.slow
def test_calibration_matches_official_values(tmp_path):
    root = shared_or_skip(CALIBRATION)
    items = calibration_items(root)
    official = pd.read_csv(root / "results_official.csv", index_col="Method")
    results = B.compute_baselines(items, CALIBRATED, tmp_path, progress=False, allow_download=False)
    assert results.unavailable == {}
    for name in CALIBRATED:
        ours = torch.tensor(results.values[f"{name}@ref"].to_numpy(dtype=float))
        expected = torch.tensor(official.loc[name, items["image_id"]].to_numpy(dtype=float))
        assert torch.allclose(ours, expected, atol=1e-2, rtol=1e-2), (name, ours, expected)
        assert results.values[f"{name}@input"].isna().all()  # no degraded input given


def write_image(path, seed, size=(48, 48)):
    rng = np.random.default_rng(seed)
    base = np.kron(rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3)), np.ones((8, 8, 1)))
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture
def items(tmp_path):
    """Three restored images; item a has a half-size degraded input, item c no reference."""
    d = tmp_path / "img"
    d.mkdir()
    return pd.DataFrame(
        {
            "image_id": ["a", "b", "c"],
            "restored": [write_image(d / f"r{i}.png", i) for i in range(3)],
            "degraded": [write_image(d / "d0.png", 10, (24, 24))]
            + [write_image(d / f"d{i}.png", 10 + i) for i in (1, 2)],
            "reference": [write_image(d / f"g{i}.png", 20 + i) for i in (0, 1)] + [None],
        }
    )


@pytest.fixture
def scored(monkeypatch):
    """Count the images each pyiqa call scores; `fail_at` makes the n-th call raise an interruption."""
    calls, run = [], B._run
    state = {"fail_at": None}

    def counting(metric, target, other):
        calls.append(len(target))
        if len(calls) == state["fail_at"]:
            raise KeyboardInterrupt
        return run(metric, target, other)

    monkeypatch.setattr(B, "_run", counting)
    return calls, state


def test_unavailable_metric_is_reported_fast_and_others_still_run(items, tmp_path, monkeypatch):
    import pyiqa.utils.download_util as download_util

    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(tmp_path / "pyiqa"))  # no cached weights
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    start = time.perf_counter()
    results = B.compute_baselines(
        items,
        ["lpips", "psnr", "musiq", "no_such_metric"],
        tmp_path / "cache",
        progress=False,
        allow_download=False,
    )
    assert time.perf_counter() - start < 5
    assert set(results.unavailable) == {"lpips", "musiq", "no_such_metric"}
    assert "downloads are off" in results.unavailable["lpips"]
    assert "unknown pyiqa metric" in results.unavailable["no_such_metric"]
    assert list(results.values.columns) == ["psnr@input", "psnr@ref"]
    assert results.values["psnr@input"].notna().all()  # item a's 24x24 input was resized to 48x48
    assert results.values["psnr@ref"].isna().tolist() == [False, False, True]


def test_cache_recomputes_only_changed_images(items, tmp_path, scored):
    calls, _ = scored
    cache = tmp_path / "cache"
    first = B.compute_baselines(items, ["psnr", "piqe"], cache, progress=False)
    assert sum(calls) == 3 + 2 + 3  # psnr@input, psnr@ref (a, b), piqe
    calls.clear()
    again = B.compute_baselines(items, ["psnr", "piqe"], cache, progress=False)
    assert calls == []
    pd.testing.assert_frame_equal(first.values, again.values)

    write_image(items.loc[1, "restored"], seed=99)  # same path, new bytes
    changed = B.compute_baselines(items, ["psnr", "piqe"], cache, progress=False)
    assert sum(calls) == 3  # b's psnr@input, psnr@ref and piqe
    differs = (changed.values.fillna(0) != first.values.fillna(0)).any(axis=1)  # c has no psnr@ref
    assert differs.tolist() == [False, True, False]


def test_a_damaged_cache_is_recomputed_not_used(items, tmp_path, scored, caplog):
    calls, _ = scored
    cache = tmp_path / "cache"
    first = B.compute_baselines(items, ["psnr", "piqe"], cache, progress=False)
    table = (cache / "psnr@input.csv").read_text().splitlines()
    header, row_a, row_b, *rest = table
    cut = row_a.split(",")
    cut[2] = cut[2][:1]  # a value cut short: 24.286 -> "2"
    emptied = row_b.split(",")
    emptied[2] = ""
    (cache / "psnr@input.csv").write_text("\n".join([header, ",".join(cut), ",".join(emptied), *rest]) + "\n")
    (cache / "piqe.csv").write_text(
        "image_id,ke y,value\n" + "\n".join((cache / "piqe.csv").read_text().splitlines()[1:])
    )
    calls.clear()
    with caplog.at_level("WARNING", logger="llscore.baselines"):
        again = B.compute_baselines(items, ["psnr", "piqe"], cache, progress=False)
    assert sum(calls) == 2 + 3  # the two damaged psnr@input values and every piqe value
    pd.testing.assert_frame_equal(first.values, again.values)
    assert "2 damaged cached value(s)" in caplog.text and "piqe.csv: unreadable" in caplog.text


def test_interrupted_run_resumes_from_cache(items, tmp_path, scored):
    calls, state = scored
    state["fail_at"] = 2
    with pytest.raises(KeyboardInterrupt):
        B.compute_baselines(items, ["psnr"], tmp_path, batch_size=1, progress=False)
    state["fail_at"] = None
    calls.clear()
    resumed = B.compute_baselines(items, ["psnr"], tmp_path, batch_size=1, progress=False)
    assert sum(calls) == 5 - 1  # only the first batch had been saved
    assert resumed.values.notna().sum().sum() == 5


def test_orientation():
    assert B.baseline_spec("psnr").sign == 1
    assert B.baseline_spec("gmsd").sign == -1 and B.baseline_spec("piqe").sign == -1
    assert B.baseline_spec("psnr").columns == ("psnr@input", "psnr@ref")
    assert B.baseline_spec("piqe").columns == ("piqe",)
    values = pd.DataFrame({"psnr@ref": [30.0, 20.0], "gmsd@input": [0.1, 0.2], "piqe": [10.0, 50.0]})
    oriented = B.BaselineResults(values).oriented()
    assert oriented.to_numpy().tolist() == [[30.0, -0.1, -10.0], [20.0, -0.2, -50.0]]
