"""`llscore demo` (docs/demo.md): the page's numbers are the API's. The browser test is still to come."""

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
    import os

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
