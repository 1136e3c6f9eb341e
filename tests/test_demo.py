"""`llscore demo` (docs/demo.md): the page's numbers are the API's, in a real browser and as a Hub Space."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llscore import LLScoreReward
from llscore.demo import judge, read_upload
from llscore.serving.items import ItemError


@pytest.fixture(scope="module")
def reward(llscore_checkpoints):
    return LLScoreReward.from_pretrained(llscore_checkpoints["qwen2_5_vl"], hallucination_weight=0.5)


def test_the_ranking_and_pairwise_matrix_are_the_apis_numbers(reward, sample_images):
    degraded = Image.open(sample_images["degraded"][0])
    restorations = [(p.name, Image.open(p)) for p in sample_images["restored"][:3]]
    verdict = judge(reward, degraded, restorations)
    results = reward.scorer.score([im for _, im in restorations], [degraded] * 3)
    assert list(verdict.quality) == sorted(results.score, reverse=True)
    by_name = {name: i for i, (name, _) in enumerate(restorations)}
    for k, name in enumerate(verdict.names):
        i = by_name[name]
        assert verdict.reward[k] == pytest.approx(
            results.score[i] - 0.5 * results.p_hallucination[i], abs=1e-5
        )
    first, second = (dict(restorations)[n] for n in verdict.names[:2])
    compared = reward.scorer.compare([first], [second], [degraded]).to_records()[0]["p_a_better"]
    assert verdict.better[0, 1] == pytest.approx(compared, abs=1e-5)
    np.testing.assert_allclose(verdict.better + verdict.better.T, 1.0, atol=1e-5)


def test_a_bad_upload_is_one_line_naming_the_file(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ItemError, match=r"notes\.png: not a PNG or JPEG image"):
        read_upload(text)


def _browser():
    """Debian's headless Chromium through Selenium (no browser download at run time), or a skip naming why."""
    import shutil

    webdriver = pytest.importorskip("selenium.webdriver")
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        from conftest import in_ci

        if in_ci():
            pytest.fail("chromium and chromedriver must be installed in CI (.ci/run installs Debian's)")
        pytest.skip(
            "no chromium / chromedriver on this machine (Debian: apt install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1600"):
        options.add_argument(flag)
    return webdriver.Chrome(service=webdriver.ChromeService(driver), options=options)


@pytest.mark.slow
def test_the_page_in_a_real_browser_ranks_as_the_api_and_shows_a_bad_upload_in_one_line(
    reward, llscore_checkpoints, sample_images, tmp_path
):

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from llscore.demo import build_page

    page = build_page(reward, str(llscore_checkpoints["qwen2_5_vl"]))
    page.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    browser = _browser()
    try:
        browser.get(page.local_url)
        wait = WebDriverWait(browser, 120)

        def upload(elem_id: str, paths: list) -> None:
            field = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]"))
            field.send_keys("\n".join(str(p) for p in paths))

        def table_rows(elem_id: str) -> list[list[str]]:
            rows = browser.find_elements(By.CSS_SELECTOR, f"#{elem_id} [role=row]")
            return [
                [cell.text for cell in row.find_elements(By.CSS_SELECTOR, "[role=gridcell]")] for row in rows
            ]

        restored = sample_images["restored"][:3]
        upload("degraded", [sample_images["degraded"][0]])
        upload("restored", restored)
        wait.until(lambda b: all(p.stem in b.find_element(By.ID, "restored").text for p in restored))
        browser.find_element(By.ID, "judge").click()
        wait.until(lambda b: any(row and row[1].endswith(".png") for row in table_rows("ranking")))
        shown = [row for row in table_rows("ranking") if row and row[1].endswith(".png")]
        verdict = judge(
            reward, Image.open(sample_images["degraded"][0]), [(p.name, Image.open(p)) for p in restored]
        )
        assert [row[1] for row in shown] == verdict.names
        for row, expected in zip(shown, verdict.rows(), strict=True):
            assert [float(value) for value in row[2:6]] == pytest.approx(expected[2:6], abs=1e-4)
        if os.environ.get("LLSCORE_DEMO_SCREENSHOT"):
            browser.save_screenshot(os.environ["LLSCORE_DEMO_SCREENSHOT"])

        corrupt = tmp_path / "corrupt.png"
        corrupt.write_bytes(b"not an image")
        upload("restored", [corrupt])
        browser.find_element(By.ID, "judge").click()
        wait.until(lambda b: "Error" in b.find_element(By.ID, "error").text)
        message = browser.find_element(By.ID, "error").text
        assert "corrupt.png: not a PNG or JPEG image" in message and "\n" not in message.strip()
        assert [row[1] for row in table_rows("ranking") if row and row[1].endswith(".png")] == verdict.names
    finally:
        browser.quit()
        page.close()


def test_examples_are_test_sources_with_the_humans_scores_and_survive_a_folder(mini_bench, tmp_path):
    """LL-Bench-mini's examples come from its test split (photographs training never saw), one task each, with
    the humans' score of every restoration; written as a folder (what a Space carries) they read back the same."""
    from llscore.data.build import build_dataset
    from llscore.data.prepared import load_prepared
    from llscore.demo import examples_from_folder, read_examples, write_examples

    prepared = build_dataset(mini_bench, tmp_path / "prepared")
    test = load_prepared(prepared).quality["test"].to_pandas()
    examples = read_examples(prepared, count=2)
    assert len(examples) == 2 and len({e.name.split(" ")[1] for e in examples}) == 2
    for example in examples:
        rows = test[test["source_id"] == example.name.split(" ")[0]]
        assert sorted(p.name for p in example.restored) == sorted(Path(p).name for p in rows["restored"])
        assert example.people == pytest.approx(
            {Path(p).name: s for p, s in zip(rows["restored"], rows["score"], strict=True)}
        )
    for name, content in write_examples(examples).items():
        (tmp_path / "folder" / name).parent.mkdir(parents=True, exist_ok=True)
        target = tmp_path / "folder" / name
        target.write_bytes(content if isinstance(content, bytes) else content.read_bytes())
    again = examples_from_folder(tmp_path / "folder")
    assert [e.name for e in again] == [e.name for e in examples]
    assert [e.scores_by_content() for e in again] == [e.scores_by_content() for e in examples]
    assert read_examples(tmp_path / "folder", count=1)[0].name == examples[0].name


SPACE_DRIVER = """
import builtins, json, sys
from importlib.metadata import packages_distributions
sys.path.insert(0, ".")
edges, real_import = set(), builtins.__import__
def recording(name, globals=None, locals=None, fromlist=(), level=0):  # every import statement: who imports what
    if level == 0 and globals:
        edges.add((globals.get("__name__", "").split(".")[0], name.split(".")[0]))
    return real_import(name, globals, locals, fromlist, level)
builtins.__import__ = recording
import app  # what the Space runs: downloads the model by its Hub id and builds the page
from gradio_client import Client, handle_file
app.page.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
example = app.examples[0]
gallery, table, matrix, error = Client(app.page.local_url, verbose=False).predict(
    handle_file(str(example.degraded)), [handle_file(str(p)) for p in example.restored], api_name="/run"
)
import llscore
owners = packages_distributions()
ours = ("llscore", "app", "__main__")
imported = sorted({d for who, m in edges if who in ours and m not in ours for d in owners.get(m, [])})
print(json.dumps({"llscore": llscore.__file__, "table": table, "error": error, "gallery": len(gallery),
                  "imported": imported}))
app.page.close()
"""


def _needed_by(requirements) -> set[str]:
    """The distributions pip installs for `requirements`: them and what they require (without extras)."""
    import re
    from importlib.metadata import PackageNotFoundError, requires

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    seen, todo = set(), [norm(r) for r in requirements]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            needs = requires(name) or []
        except PackageNotFoundError:
            continue
        todo += [
            norm(re.split(r"[ ;<>=!~\[(]", need, maxsplit=1)[0]) for need in needs if "extra ==" not in need
        ]
    return seen


@pytest.mark.slow
def test_llscore_push_space_serves_the_page_of_the_pushed_model_by_its_hub_id(
    llscore_checkpoints, mini_bench, tmp_path
):
    """`llscore push --space` against the stand-in Hub: the Space, downloaded and run as the Hub runs it (its own
    llscore sources, the model fetched by Hub id at the pushed commit), answers an example with the numbers of
    `LLScore.score` on the same files, the humans' scores beside them; its requirements (and what pip installs for
    them) cover every distribution that the Space's code imports while it serves."""
    import json
    import re
    import subprocess
    import sys

    from fake_hub import FakeHub, client_pointed_at
    from huggingface_hub import snapshot_download

    from llscore import LLScore
    from llscore.cli import main
    from llscore.data.build import build_dataset
    from llscore.space import SPACE_REQUIREMENTS

    prepared = build_dataset(mini_bench, tmp_path / "prepared")
    ckpt = llscore_checkpoints["qwen2_5_vl"]
    home = tmp_path / "hf_home"
    with FakeHub("hf_spaceTestToken0123456789") as server, client_pointed_at(server, home):
        argv = ["push", "--ckpt", str(ckpt), "--repo-id", "tester/llscore-tiny", "--space", "tester/demo"]
        assert main([*argv, "--examples", str(prepared), "--examples-count", "2"]) == 0
        space = server.repos["spaces/tester/demo"]
        assert space.sdk == "gradio" and not server.unhandled
        model_commit = server.repos["tester/llscore-tiny"].head
        app_source = space.files["app.py"].decode()
        assert (
            f"REVISION = {model_commit!r}" in app_source and "MODEL_ID = 'tester/llscore-tiny'" in app_source
        )
        card = space.files["README.md"].decode()
        assert re.search(r"^sdk: gradio$", card, re.M) and "  - tester/llscore-tiny" in card
        assert "suggested_hardware: cpu-basic" in card
        folder = Path(snapshot_download("tester/demo", repo_type="space", local_dir=tmp_path / "space"))
        environment = {
            **os.environ,
            "HF_ENDPOINT": server.url,
            "HF_HOME": str(tmp_path / "space_home"),  # nothing cached: the model comes from the Hub
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):  # a public model needs no token
            environment.pop(name, None)
        run = subprocess.run(
            [sys.executable, "-c", SPACE_DRIVER],
            cwd=folder,
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert run.returncode == 0, run.stderr[-3000:]
    answer = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("{")))
    assert Path(answer["llscore"]).resolve().is_relative_to(folder.resolve())  # the Space's own sources
    assert answer["error"] == "" and answer["gallery"] == 1 + len(answer["table"]["data"])
    from llscore.demo import examples_from_folder

    example = examples_from_folder(folder / "examples")[0]
    results = LLScore.from_pretrained(ckpt).score(
        list(example.restored), [example.degraded] * len(example.restored)
    )
    expected = dict(zip((p.name for p in example.restored), results.score, strict=True))
    shown = answer["table"]["data"]
    assert [row[1] for row in shown] == sorted(expected, key=lambda n: -expected[n])
    for row in shown:
        assert row[2] == pytest.approx(expected[row[1]], abs=1e-4)
        assert row[6] == pytest.approx(example.people[row[1]], abs=1e-4)  # the humans' score, beside
    assert {"torch", "transformers", "gradio"} <= set(answer["imported"])  # the recording saw the imports
    imported = {re.sub(r"[-_.]+", "-", name).lower() for name in answer["imported"]} - {"llscore"}
    assert imported <= _needed_by(SPACE_REQUIREMENTS)
