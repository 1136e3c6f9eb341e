"""Hub push and load against a fake Hub on 127.0.0.1 (tests/fake_hub.py), through the real huggingface_hub client."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fake_hub import FakeHub, client_pointed_at
from huggingface_hub import HfApi, ModelCard, constants, snapshot_download
from scripts import REPO, load_script, short_run
from transformers import AutoModelForImageTextToText

from llscore.api import LLScore
from llscore.cli import main
from llscore.data.build import build_dataset
from llscore.data.prepared import load_prepared
from llscore.data.provenance import LL_BENCH_HUB_ID, TRAINING_DATA
from llscore.errors import CheckpointError, HubError
from llscore.families import family_of
from llscore.hub import check_push_access, push_checkpoint
from llscore.modeling import LoraSettings, save_checkpoint
from llscore_sim.settings import load_config

TOKEN = "hf_fakeTokenThatMustNeverBePrinted0123"
BASE_REPO = "tester/tiny-base"
METRICS = {
    "split": "test",
    "n_images": 40,
    "n_pairs": 120,
    "n_boot": 50,
    "overall": {
        "llscore": {"srcc": 0.812, "srcc_ci": [0.7, 0.9], "plcc": 0.798, "krcc": 0.64, "pairwise_acc": 0.77},
        "psnr@input": {"srcc": 0.41, "plcc": 0.39, "krcc": 0.3, "pairwise_acc": 0.6},
    },
    "unavailable": {"lpips@ref": "OSError: no weights offline"},
    "hallucination": {"auroc": 0.88, "ap": 0.7, "ece": 0.05},
}


@pytest.fixture(scope="module")
def fake_hub(tiny_checkpoints, tmp_path_factory):
    """One fake Hub for the module, holding the adapter's base as a plain model repo."""
    with FakeHub(TOKEN) as server, client_pointed_at(server, tmp_path_factory.mktemp("hf_home")):
        api = HfApi(token=TOKEN)
        api.create_repo(BASE_REPO)
        # upload_folder takes the client's streamed multi-commit path, push_checkpoint its create_commit path.
        api.upload_folder(repo_id=BASE_REPO, folder_path=tiny_checkpoints["qwen2_5_vl"])
        yield server


@pytest.fixture
def hub(fake_hub, monkeypatch, tmp_path):
    """The fake Hub with an empty download cache for this test; fails the test on any unimplemented request."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    yield fake_hub
    assert not fake_hub.unhandled, f"requests the fake hub does not implement: {fake_hub.unhandled}"


@pytest.fixture(scope="module")
def adapter(llscore_checkpoints, tmp_path_factory) -> Path:
    """A LoRA adapter with random (non-zero) weights whose llscore_config names its base by a local path."""
    from peft import get_peft_model

    scorer = LLScore.from_pretrained(llscore_checkpoints["qwen2_5_vl"])
    peft_config = LoraSettings(use_lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0).peft_config(
        family_of(scorer.model.config)
    )
    peft_config.init_lora_weights = False
    torch.manual_seed(0)
    scorer.model = get_peft_model(scorer.model, peft_config)
    out = scorer.save_pretrained(tmp_path_factory.mktemp("adapter") / "llscore-lora")
    (out / "training_args.bin").write_bytes(b"a pickle that must not be pushed")
    return out


@pytest.fixture(scope="module")
def local_results(adapter, llscore_checkpoints, sample_images):
    """Scores of the local adapter checkpoint and of its base (to show that the adapter matters)."""
    images = sample_images["restored"][:3], sample_images["degraded"][:3]
    local = LLScore.from_pretrained(adapter).score(*images)
    base = LLScore.from_pretrained(llscore_checkpoints["qwen2_5_vl"]).score(*images, hallucination=False)
    assert np.abs(local.score - base.score).max() > 1e-3, "the adapter must change the scores"
    return images, local


def remote_files(hub: FakeHub, repo_id: str) -> dict[str, bytes]:
    return hub.repos[repo_id].files


def test_adapter_push_loads_back_by_repo_id_online_and_offline(hub, adapter, local_results, monkeypatch):
    images, local = local_results
    push_checkpoint(adapter, "tester/llscore-lora", base_repo_id=BASE_REPO, private=True)
    files = remote_files(hub, "tester/llscore-lora")
    assert hub.repos["tester/llscore-lora"].private
    assert {"adapter_model.safetensors", "adapter_config.json", "llscore_config.json", "README.md"} <= set(
        files
    )
    assert {"tokenizer.json", "chat_template.jinja", "processor_config.json"} <= set(files)
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pth"))]
    assert json.loads(files["llscore_config.json"])["base_model"] == BASE_REPO
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == BASE_REPO
    assert files["adapter_model.safetensors"] == (adapter / "adapter_model.safetensors").read_bytes()

    online = LLScore.from_pretrained("tester/llscore-lora").score(*images)
    np.testing.assert_array_equal(online.score, local.score)
    np.testing.assert_array_equal(online.p_hallucination, local.p_hallucination)

    sent = len(hub.requests)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1: the cache alone must serve
    offline = LLScore.from_pretrained("tester/llscore-lora").score(*images)
    np.testing.assert_array_equal(offline.score, local.score)
    assert len(hub.requests) == sent


def test_merged_push_replaces_an_adapter_and_loads_with_plain_transformers(hub, adapter, local_results):
    images, local = local_results
    repo = "tester/llscore"
    push_checkpoint(adapter, repo, base_repo_id=BASE_REPO)
    push_checkpoint(adapter, repo, merge=True)  # same repo: the adapter's files must go
    files = remote_files(hub, repo)
    assert "model.safetensors" in files and "config.json" in files
    assert not {"adapter_model.safetensors", "adapter_config.json"} & set(files)
    assert json.loads(files["llscore_config.json"])["base_model"] is None  # a local path is never published

    model = AutoModelForImageTextToText.from_pretrained(snapshot_download(repo))
    assert type(model).__module__.startswith("transformers.") and not hasattr(model, "peft_config")
    merged = LLScore.from_pretrained(repo).score(*images)
    np.testing.assert_allclose(merged.score, local.score, atol=1e-5)
    np.testing.assert_allclose(merged.p_hallucination, local.p_hallucination, atol=1e-5)


def test_a_push_that_cannot_connect_is_one_line(adapter, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(HubError, match=r"cannot reach http://127.0.0.1:9 \(ConnectError") as caught:
        push_checkpoint(adapter, "tester/x", base_repo_id=BASE_REPO, endpoint="http://127.0.0.1:9")
    assert "\n" not in str(caught.value) and TOKEN not in str(caught.value)


def test_a_token_check_that_cannot_connect_is_one_line(monkeypatch):
    """train.py checks the token before training (claim_hub_push): an unreachable Hub is one line, as a push's is,
    whichever HTTP library raised it."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(
        HubError, match=r"cannot reach the Hugging Face Hub .*tester/x: ConnectError"
    ) as caught:
        check_push_access("tester/x", endpoint="http://127.0.0.1:9")
    assert "\n" not in str(caught.value) and TOKEN not in str(caught.value)


def test_a_push_changes_only_its_own_files(hub, adapter, caplog):
    repo = "tester/shared"
    api = HfApi(token=TOKEN)
    api.create_repo(repo)
    foreign = {
        "results.csv": b"model,srcc\nmine,0.8\n",
        "other/model.safetensors": b"another model's weights",
        "reward_head.safetensors": b"the user's own weights",
    }
    for name, content in foreign.items():
        api.upload_file(path_or_fileobj=content, path_in_repo=name, repo_id=repo)
    push_checkpoint(adapter, repo, base_repo_id=BASE_REPO)
    with caplog.at_level(logging.WARNING, logger="llscore.hub"):
        push_checkpoint(adapter, repo, merge=True)
    files = remote_files(hub, repo)
    assert {name: files[name] for name in foreign} == foreign
    assert "adapter_model.safetensors" not in files and "model.safetensors" in files
    removed = sorted(
        r.getMessage().split()[1] for r in caplog.records if r.getMessage().startswith("removing")
    )
    assert removed == ["adapter_config.json", "adapter_model.safetensors"]


def test_a_push_sends_the_checkpoints_own_files_only_and_names_the_others(hub, adapter, tmp_path, caplog):
    """A folder's other files (a hidden token file, notes) are not the checkpoint's: they stay on the disk."""
    ckpt = Path(shutil.copytree(adapter, tmp_path / "ckpt"))
    (ckpt / ".secrets.json").write_text(json.dumps({"token": TOKEN}))
    (ckpt / "notes.txt").write_text("my notes\n")
    (ckpt / "extra.jinja").write_text("{{ x }}\n")
    with caplog.at_level(logging.WARNING, logger="llscore.hub"):
        push_checkpoint(ckpt, "tester/own-files", base_repo_id=BASE_REPO)
    files = remote_files(hub, "tester/own-files")
    assert not {".secrets.json", "notes.txt", "extra.jinja", "training_args.bin"} & set(files)
    assert not [name for name, content in files.items() if TOKEN.encode() in content]
    assert {"adapter_model.safetensors", "tokenizer_config.json", "chat_template.jinja"} <= set(files)
    left = [r.getMessage() for r in caplog.records if "not pushed" in r.getMessage()]
    assert len(left) == 1 and left[0].endswith(": .secrets.json, extra.jinja, notes.txt, training_args.bin")


@pytest.mark.parametrize("merge", [False, True], ids=["adapter", "merged"])
def test_model_card_metadata_results_and_usage(hub, adapter, local_results, tmp_path, merge):
    images, local = local_results
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps(METRICS))
    repo = f"tester/card-{'merged' if merge else 'adapter'}"
    push_checkpoint(
        adapter,
        repo,
        merge=merge,
        base_repo_id=BASE_REPO,
        eval_dir=tmp_path / "eval",
        dataset=LL_BENCH_HUB_ID,
    )  # this checkpoint has no training_data.json: its data is declared

    card = ModelCard(remote_files(hub, repo)["README.md"].decode())
    data = card.data
    assert data.library_name == ("transformers" if merge else "peft")
    assert (data.pipeline_tag, data.base_model, data.license) == (
        "image-text-to-text",
        BASE_REPO,
        "cc-by-nc-4.0",
    )
    assert data.datasets == [LL_BENCH_HUB_ID]
    reported = {(r.task_type, r.metric_type): r.metric_value for r in data.eval_results}
    assert reported == {
        ("image-quality-assessment", "srcc"): 0.812,
        ("image-quality-assessment", "plcc"): 0.798,
        ("image-quality-assessment", "krcc"): 0.64,
        ("image-quality-assessment", "pairwise_acc"): 0.77,
        ("hallucination-detection", "auroc"): 0.88,
        ("hallucination-detection", "ap"): 0.7,
        ("hallucination-detection", "ece"): 0.05,
    }
    assert {r.dataset_split for r in data.eval_results} == {"test"}
    text = card.text
    assert "| llscore | 0.812 [0.700, 0.900] | 0.798 |" in text and "| psnr@input | 0.410 |" in text
    assert (
        "could not run where this was evaluated: `lpips@ref` (OSError: no weights offline)" in text
        and "AUROC 0.880" in text
    )
    assert "quality score in [1, 5]" in text and "hallucinated" in text
    assert "How would you rate the quality of the restored image?" in text
    assert "between 3,136 and 12,544 pixels" in text  # the adapter's resolution rule (conftest)
    assert "CC-BY-NC-4.0" in text and f'LLScore.from_pretrained("{repo}")' in text

    # The plain-transformers snippet in the card scores like LLScore (peft loads the adapter's base by Hub id).
    assert_the_card_snippet_scores_alike(text, images, local, 1e-5)


def assert_the_card_snippet_scores_alike(text: str, images, local, tolerance: float) -> None:
    """The card's plain-transformers snippet, run on the first (restored, degraded) pair, gives `local`'s numbers."""
    code = re.search(r"With plain transformers.*?```python\n(.*?)```", text, re.S).group(1)
    code = code.replace('"input.png"', repr(str(images[1][0]))).replace(
        '"restored.png"', repr(str(images[0][0]))
    )
    namespace = {}
    exec(code, namespace)
    assert namespace["score"] == pytest.approx(float(local.score[0]), abs=tolerance)
    assert namespace["p_hallucination"] == pytest.approx(float(local.p_hallucination[0]), abs=tolerance)


def test_a_card_names_only_the_data_that_the_records_name(hub, tiny_checkpoints, mini_bench, tmp_path):
    """Trained on LL-Bench-mini and evaluated on its test split: the card says so, with the real counts, and
    claims nothing of LL-Bench; the training section follows the checkpoint's training_data.json."""
    prepared = build_dataset(mini_bench, tmp_path / "prepared")
    run = tmp_path / "run"
    load_script("train.py").run(
        load_config(None, short_run(tiny_checkpoints["qwen2_5_vl"], prepared, run, "--max_steps", "1"))
    )
    argv = [
        "--ckpt",
        str(run),
        "--data",
        str(prepared),
        "--baselines",
        "none",
        "--out",
        str(tmp_path / "eval"),
    ]
    assert load_script("eval.py").main(argv) == 0
    evaluation = (tmp_path / "eval" / "report.md").read_text()
    assert "Evaluated on LL-Bench-mini (a local folder" in evaluation and "`test` split" in evaluation
    assert "The LL-Score checkpoint was trained on LL-Bench-mini" in evaluation
    push_checkpoint(run, "tester/mini", eval_dir=tmp_path / "eval")
    card = ModelCard(remote_files(hub, "tester/mini")["README.md"].decode())
    report = load_prepared(prepared).report
    counts = report["counts"]
    training = card.text.split("## Training data and licence")[1].split("## Usage")[0]
    assert "Trained on LL-Bench-mini (a local folder, generated by data_prep/make_mini_bench.py" in training
    assert f"`train` split: {counts['sources_per_split']['train']:,} source images" in training
    assert (
        f"{counts['pairs']['train']:,} human-compared pairs from {counts['pair_votes']['train']:,} votes"
        in training
    )
    assert "selected on LL-Bench-mini (a local folder" in training and "`val` split" in training
    assert "`test` split of LL-Bench-mini: " in card.text
    assert {r.dataset_name for r in card.data.eval_results} == {"LL-Bench-mini"}
    assert card.data.datasets is None  # LL-Bench-mini is not a Hub dataset
    for claim in ("2,469", "28,919", "152,020", "LL-Bench is licensed", "LL-Bench human preferences"):
        assert claim not in card.text, claim

    record = json.loads((run / TRAINING_DATA).read_text())
    record["train"]["name"] = "Another-Bench"
    (run / TRAINING_DATA).write_text(json.dumps(record))
    push_checkpoint(run, "tester/mini", eval_dir=tmp_path / "eval")
    training = ModelCard(remote_files(hub, "tester/mini")["README.md"].decode()).text.split("## Usage")[0]
    assert "Trained on Another-Bench (a local folder" in training
    with pytest.raises(HubError, match=r"records training on Another-Bench; --dataset .* drop --dataset"):
        push_checkpoint(run, "tester/mini", dataset=LL_BENCH_HUB_ID)


def test_push_without_a_token_fails_before_any_request(hub, adapter, monkeypatch, capsys):
    sent = len(hub.requests)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert main(["push", "--ckpt", str(adapter), "--repo-id", "tester/x", "--base-repo-id", BASE_REPO]) == 2
    assert "no Hugging Face token: set HF_TOKEN" in capsys.readouterr().err
    assert len(hub.requests) == sent


def test_push_refuses_an_adapter_whose_base_is_a_local_path(hub, adapter):
    sent = len(hub.requests)
    with pytest.raises(HubError, match=r"is not a Hub id that a downloader can resolve; pass --base-repo-id"):
        push_checkpoint(adapter, "tester/x")
    with pytest.raises(HubError, match=r"metrics\.json: no such file"):
        push_checkpoint(adapter, "tester/x", base_repo_id=BASE_REPO, eval_dir=adapter)
    assert len(hub.requests) == sent


def test_no_pushed_file_names_a_local_path(hub, adapter, tmp_path, monkeypatch):
    """Trainer records best_model_checkpoint as an absolute path of this machine; a card or config may too."""
    ckpt = Path(shutil.copytree(adapter, tmp_path / "run"))
    state = {"best_model_checkpoint": str(ckpt.resolve() / "checkpoint-4"), "global_step": 6}
    (ckpt / "trainer_state.json").write_text(json.dumps(state, indent=2))
    on_disk = (ckpt / "trainer_state.json").read_bytes()
    push_checkpoint(ckpt, "tester/no-local-paths", base_repo_id=BASE_REPO)
    files = remote_files(hub, "tester/no-local-paths")
    assert json.loads(files["trainer_state.json"]) == {**state, "best_model_checkpoint": "checkpoint-4"}
    assert (ckpt / "trainer_state.json").read_bytes() == on_disk
    assert not [name for name, content in files.items() if str(tmp_path).encode() in content]

    sent = len(hub.requests)
    (ckpt / "validation.json").write_text(json.dumps({"data": f"{ckpt.resolve()}/data"}))
    with pytest.raises(HubError, match=r"^validation\.json \(pushed from .*\) holds the local path .*/run;"):
        push_checkpoint(ckpt, "tester/no-local-paths", base_repo_id=BASE_REPO)
    (ckpt / "validation.json").unlink()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (ckpt / "generation_config.json").write_text(json.dumps({"cache": str(tmp_path / "home" / ".cache")}))
    with pytest.raises(
        HubError, match=r"^generation_config\.json \(pushed from .*\) holds the local path .*/home;"
    ):
        push_checkpoint(ckpt, "tester/no-local-paths", base_repo_id=BASE_REPO)
    assert len(hub.requests) == sent


def test_the_token_is_never_printed_or_logged(hub, adapter, monkeypatch, capfd, caplog):
    monkeypatch.setattr(constants, "HF_DEBUG", True)  # huggingface_hub logs every request as a curl command
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    args = ["push", "--ckpt", str(adapter), "--repo-id", "tester/logged", "--base-repo-id", BASE_REPO]
    assert main(args) == 0
    monkeypatch.setenv("HF_TOKEN", TOKEN + "-revoked")
    assert main(args) == 2
    out, err = capfd.readouterr()
    assert "pushed" in out and "401" in err and "Invalid credentials" in err
    assert any("curl" in r.getMessage() for r in caplog.records), "debug logging was not captured"
    for text in (out, err, caplog.text):
        assert TOKEN not in text


@pytest.mark.slow
def test_console_command_pushes_and_scores_through_the_hub(hub, adapter, local_results, tmp_path):
    """`pip install -e .` installs `llscore`; it honours HF_TOKEN / HF_ENDPOINT / HF_HOME from the environment."""
    command = shutil.which("llscore")
    if command is None:
        pytest.skip("the llscore console command is not installed (pip install -e .)")
    images, local = local_results
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    env.pop("HF_HUB_CACHE", None)
    help_text = subprocess.run(
        [command, "--help"], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert "score" in help_text and "push" in help_text
    push = subprocess.run(
        [command, "push", "--ckpt", str(adapter), "--repo-id", "tester/cli", "--base-repo-id", BASE_REPO],
        capture_output=True,
        text=True,
        env=env,
    )
    assert push.returncode == 0, push.stderr
    assert TOKEN not in push.stdout + push.stderr
    restored, degraded = (Path(tmp_path / kind) for kind in ("restored", "degraded"))
    for folder, paths in zip((restored, degraded), images, strict=True):
        folder.mkdir()
        for path in paths:
            shutil.copy(path, folder)
    before_scoring = len(hub.requests)
    score = subprocess.run(
        [
            command,
            "score",
            "--ckpt",
            "tester/cli",
            "--restored",
            str(restored),
            "--degraded",
            str(degraded),
            "--out",
            str(tmp_path / "scores.csv"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert score.returncode == 0, score.stderr
    # Loading a checkpoint asks the Hub for the checkpoint's files and its base's, nothing else (no Hub kernels).
    others = [r for r in hub.requests[before_scoring:] if "tester/cli" not in r and BASE_REPO not in r]
    assert not others, others
    assert "publisher trust" not in score.stderr
    frame = pd.read_csv(tmp_path / "scores.csv")
    np.testing.assert_allclose(frame["score"].to_numpy(), local.score, rtol=0, atol=1e-6)
    assert (tmp_path / "hf_home" / "hub" / "models--tester--cli").is_dir()


def test_a_token_that_cannot_push_fails_before_training(hub, monkeypatch):
    """train.py checks the token with the Hub before it trains (claim_hub_push), not at the push hours later."""
    from llscore.config import load_config
    from llscore.runs import claim_hub_push

    check_push_access("tester/fine")  # the server's token, in its owner's namespace
    with pytest.raises(HubError, match=r"cannot create someone/else: its namespaces are \['tester'\]"):
        check_push_access("someone/else")
    monkeypatch.setenv("HF_TOKEN", "hf_wrongTokenWrongTokenWrongToken00")
    args = load_config(None, ["--push_to_hub", "true", "--hub_model_id", "tester/run"]).training
    with pytest.raises(HubError, match=r"HTTP 401") as refused:
        claim_hub_push(args)
    assert "hf_wrongToken" not in str(refused.value)


def test_a_head_checkpoint_is_pushed_merged_with_its_heads_and_its_card_snippet_scores_alike(
    hub, tiny_checkpoints, sample_images, tmp_path
):
    """The head formulation on the Hub: a LoRA head adapter pushed merged keeps its heads (their own
    safetensors file) and token rows; the card says which formulation it is, and its plain-transformers
    snippet (heads read from the file) gives LLScore's numbers."""
    from test_heads import head_model

    model, processor, config = head_model(tiny_checkpoints["qwen2_5_vl"], use_lora=True)
    ckpt = save_checkpoint(model, processor, config, tmp_path / "heads")
    images = sample_images["restored"][:2], sample_images["degraded"][:2]
    local = LLScore.from_pretrained(ckpt).score(*images)
    repo = "tester/llscore-heads"
    push_checkpoint(ckpt, repo, merge=True)
    files = remote_files(hub, repo)
    assert {"llscore_heads.safetensors", "model.safetensors"} <= set(files)
    assert "adapter_model.safetensors" not in files
    pushed = LLScore.from_pretrained(repo).score(*images)
    np.testing.assert_allclose(pushed.score, local.score, atol=1e-4)
    np.testing.assert_allclose(pushed.p_hallucination, local.p_hallucination, atol=1e-4)

    text = ModelCard(files["README.md"].decode()).text
    assert "head formulation" in text and "level formulation" not in text and "<QUAL>" in text
    assert "llscore-heads" in ModelCard(files["README.md"].decode()).data.tags
    assert_the_card_snippet_scores_alike(text, images, local, 1e-4)


def test_a_hub_checkpoint_missing_its_heads_is_named_by_its_repo_id(hub, llscore_checkpoints, tmp_path):
    """The error named the download cache's snapshot folder, which the user never gave."""
    ckpt = Path(shutil.copytree(llscore_checkpoints["qwen2_5_vl"], tmp_path / "no-heads"))
    config = json.loads((ckpt / "llscore_config.json").read_text())
    (ckpt / "llscore_config.json").write_text(json.dumps({**config, "formulation": "heads"}))
    HfApi(token=TOKEN).create_repo("tester/no-heads")
    HfApi(token=TOKEN).upload_folder(repo_id="tester/no-heads", folder_path=ckpt)
    with pytest.raises(CheckpointError) as refused:
        LLScore.from_pretrained("tester/no-heads")
    assert str(refused.value) == (
        "tester/no-heads: its llscore_config.json says 'heads' but it has no llscore_heads.safetensors"
    )


def test_push_refuses_the_eval_of_another_checkpoint(
    hub, adapter, llscore_checkpoints, tmp_path, monkeypatch
):
    """metrics.json names the checkpoint eval.py scored; another's numbers must not go on this card."""
    other = llscore_checkpoints["qwen2_5_vl"]
    (tmp_path / "eval").mkdir()
    metrics = tmp_path / "eval" / "metrics.json"
    push = {"base_repo_id": BASE_REPO, "eval_dir": tmp_path / "eval"}
    sent = len(hub.requests)
    for model, named in [
        ({"ckpt": str(other), "folder": str(other.resolve())}, re.escape(str(other))),
        ({"ckpt": str(other)}, re.escape(str(other))),  # a report from before `folder` was recorded
        ({"ckpt": "someone/other", "folder": None}, "someone/other"),  # a Hub checkpoint
    ]:
        metrics.write_text(json.dumps({**METRICS, "llscore_model": {**model, "zero_shot": False}}))
        with pytest.raises(
            HubError, match=rf"metrics\.json: an evaluation of {named}, not of {re.escape(str(adapter))}"
        ):
            push_checkpoint(adapter, "tester/evaluated", **push)
    assert len(hub.requests) == sent
    monkeypatch.chdir(adapter.parent)  # the same folder, by another name, is this checkpoint's evaluation
    metrics.write_text(json.dumps({**METRICS, "llscore_model": {"ckpt": adapter.name, "zero_shot": False}}))
    push_checkpoint(adapter, "tester/evaluated", **push)
    assert "0.812" in remote_files(hub, "tester/evaluated")["README.md"].decode()


@pytest.mark.parametrize("script", ["train.py", "data_prep/pretrain_tiny_base.py", "bench/learning_curve.py"])
def test_a_script_that_imports_bitsandbytes_asks_the_hub_nothing_on_start(script, hub, tmp_path):
    """bitsandbytes asks the Hub for a CPU kernel when it is imported (transformers' Trainer imports it); the
    scripts that import it on start call keep_bitsandbytes_off_the_hub() first."""
    sent = len(hub.requests)
    started = subprocess.run(
        [sys.executable, "-X", "importtime", str(REPO / script), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert started.returncode == 0 and "usage:" in started.stdout
    assert hub.requests[sent:] == [] and "gemm_4bit" not in started.stderr
    imported = [line.split("|")[-1].strip() for line in started.stderr.splitlines() if "|" in line]
    assert "bitsandbytes" not in imported or (
        imported.index("llscore.hub_kernels") < imported.index("bitsandbytes")
    )


def test_importing_llscore_leaves_the_hub_kernels_alone():
    """`import llscore` (and its command line's module) changes nothing outside llscore: the guard is a call."""
    code = (
        "import logging, kernels; hub_get_kernel = kernels.get_kernel; import llscore, llscore.cli; "
        "print(kernels.get_kernel is hub_get_kernel, logging.getLogger('bitsandbytes.backends.cpu.ops').level)"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert imported.stdout.split() == ["True", "0"], imported.stderr


def test_the_guard_refuses_only_bitsandbytes_hub_kernel_unless_asked(monkeypatch):
    import kernels

    from llscore.hub_kernels import BITSANDBYTES_HUB_KERNEL, keep_bitsandbytes_off_the_hub

    asked = []
    monkeypatch.setattr(kernels, "get_kernel", lambda repo_id, **kwargs: asked.append(repo_id) or repo_id)
    monkeypatch.setenv("LLSCORE_HUB_KERNELS", "1")
    assert keep_bitsandbytes_off_the_hub() is False
    assert kernels.get_kernel(BITSANDBYTES_HUB_KERNEL) == BITSANDBYTES_HUB_KERNEL  # asked for: fetched
    monkeypatch.delenv("LLSCORE_HUB_KERNELS")
    assert keep_bitsandbytes_off_the_hub() is True and keep_bitsandbytes_off_the_hub() is True
    with pytest.raises(RuntimeError, match="is not fetched unless LLSCORE_HUB_KERNELS=1"):
        kernels.get_kernel(BITSANDBYTES_HUB_KERNEL, version=1)
    assert kernels.get_kernel("kernels-community/activation", version=1) == "kernels-community/activation"
    assert asked == [BITSANDBYTES_HUB_KERNEL, "kernels-community/activation"]  # wrapped once, not twice
