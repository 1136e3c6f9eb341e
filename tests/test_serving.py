"""LL-Score as a reward where image RL runs (docs/serving.md): the restricted unpickler, the wire protocols, the
in-process adapters, the pyiqa plugin, and `llscore serve` on loopback called by each framework's own client
code, under load, with a replica killed mid-run."""

import asyncio
import base64
import io
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
import torch
from PIL import Image

from llscore import LLScoreReward
from llscore.serving.adapters import compute_score, flow_grpo_reward
from llscore.serving.items import DegradedInputs, Item, Limits, decode_image, score_items
from llscore.serving.protocols import PROTOCOLS, RequestError
from llscore.serving.safe_pickle import UnsafePickle, safe_dumps, safe_loads
from llscore.serving.service import authorised, token_digest

WEIGHT = 0.5  # λ of the service under test, so that the reward differs from the quality


class _Planted:
    """An object whose unpickling would create `path`: what a hostile client sends."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image) -> bytes:
    """As Flow-GRPO's and verl-omni's clients encode: Pillow's default JPEG quality (75)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def decoded(data: bytes) -> Image.Image:
    return decode_image(data, Limits(), "test")[0]


# ---------------------------------------------------------------- untrusted input, no model


def test_plain_data_passes_the_restricted_unpickler_and_code_does_not(tmp_path):
    data = {
        "images": [b"\x89PNG", b"x"],
        "prompts": ["a", "b"],
        "metadata": {"n": 1, "f": 0.5, "t": (1, None)},
    }
    assert safe_loads(pickle.dumps(data)) == data
    assert safe_loads(safe_dumps({"scores": [1.0, float("nan")]}))["scores"][0] == 1.0
    marker = tmp_path / "ran"
    hostile = [
        pickle.dumps({"images": [_Planted(marker)]}),  # a REDUCE of os.mkdir
        pickle.dumps({"images": [_Planted(marker)]}, protocol=0),  # the text protocol's GLOBAL
        pickle.dumps({"images": {b"a"}}),  # a set: not on the list
        pickle.dumps(np.zeros(2)),  # a numpy array names its class
    ]
    for body in hostile:
        with pytest.raises(UnsafePickle, match=r"is refused|names"):
            safe_loads(body)
    assert not marker.exists(), "a refused pickle must build nothing"
    with pytest.raises(UnsafePickle, match="not a whole pickle"):
        safe_loads(pickle.dumps(data)[:-20])
    # plain data that would still cost the unpickler unbounded memory, C stack or time
    costly = {
        "skips ahead": b"\x80\x04N" + b"r" + (1 << 23).to_bytes(4, "little") + b".",  # memo grown to 8M
        "nests deeper": b"\x80\x04}" + b")" + b"\x85" * 100 + b"Ns.",  # a key 100 tuples deep
        "only str keys": pickle.dumps({i: 1 for i in range(3)}),  # ints hash as chosen: collisions
        "bits is refused": pickle.dumps([2**100]),
    }
    for reason, body in costly.items():
        with pytest.raises(UnsafePickle, match=reason):
            safe_loads(body)
    with pytest.raises(UnsafePickle):
        safe_dumps({"scores": np.float64(1.0)})  # a reply the clients could not read with plain data only


def test_each_protocol_reads_its_body_and_bad_items_get_one_line(tmp_path, sample_images):
    folder = tmp_path / "inputs"
    folder.mkdir()
    Image.open(sample_images["degraded"][0]).save(folder / "scene_0.png")
    registered = DegradedInputs(folder)
    limits = Limits(max_request_bytes=1 << 20, max_image_pixels=100 * 100)
    good = sample_images["restored"][0].read_bytes()
    big = png_bytes(Image.new("RGB", (200, 200)))
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")

    body = pickle.dumps(
        {
            "images": [good, big, gif.getvalue(), good[:60]],
            "prompts": ["scene_0", "x", "y", "z"],
            "metadata": {},
        }
    )
    items = PROTOCOLS["verl_omni"].read(body, registered, limits)
    assert items[0].error is None and items[0].degraded is not None and not items[0].jpeg
    assert "200x200 is over the limit of 10,000 pixels" in items[1].error
    assert "GIF is not accepted" in items[2].error
    assert "cut short or corrupt" in items[3].error or "not a PNG or JPEG" in items[3].error
    assert all("\n" not in item.error for item in items[1:])

    unirl = {
        "requests": [
            {
                "history": [{"text": "p", "image_b64": base64.b64encode(good).decode()}],
                "required_rewards": ["llscore"],
            },
            {"history": [{"text": "p", "image_b64": "%%%"}], "required_rewards": ["llscore"]},
            {"history": [], "required_rewards": ["llscore"]},
            {
                "history": [{"text": "p", "image_b64": base64.b64encode(good).decode()}],
                "required_rewards": ["hpsv2"],
            },
        ]
    }
    items = PROTOCOLS["unirl"].read(json.dumps(unirl).encode(), registered, limits)
    assert items[0].error is None and items[0].degraded is None
    assert (
        "not valid base64" in items[1].error
        and "non-empty list" in items[2].error
        and "hpsv2" in items[3].error
    )

    as_path = pickle.dumps({"images": [good], "metadata": [{"degraded": "/etc/hosts.png"}]})
    (item,) = PROTOCOLS["flow_grpo"].read(as_path, registered, limits)
    assert "must be PNG or JPEG bytes, got str" in item.error, "never a path on the server"
    with pytest.raises(RequestError, match="the limit is 256"):
        PROTOCOLS["flow_grpo"].read(pickle.dumps({"images": [good] * 257}), registered, limits)
    small = Limits(max_image_pixels=100 * 100, max_request_pixels=3 * 72 * 64)  # three of the sample images
    items = PROTOCOLS["flow_grpo"].read(pickle.dumps({"images": [good] * 5}), registered, small)
    assert [item.error is None for item in items] == [True, True, True, False, False]
    assert "limit of decoded pixels" in items[3].error

    own = {
        "items": [
            {"restored": base64.b64encode(good).decode(), "degraded_id": "scene_0.png"},
            {"restored": base64.b64encode(good).decode(), "degraded_id": "elsewhere"},
        ]
    }
    items = PROTOCOLS["llscore"].read(json.dumps(own).encode(), registered, limits)
    assert items[0].degraded is not None and "'elsewhere' is not registered" in items[1].error
    for name, body in [
        ("flow_grpo", b"not a pickle"),
        ("unirl", b"{"),
        ("llscore", b'{"images": []}'),
        ("verl_omni", pickle.dumps([1])),
    ]:
        with pytest.raises(RequestError):
            PROTOCOLS[name].read(body, registered, limits)


def test_the_bearer_token_is_checked_by_its_digest():
    digest = token_digest("s3cret")
    assert authorised({"authorization": "Bearer s3cret"}, digest)
    assert not authorised({"authorization": "Bearer wrong"}, digest)
    assert not authorised({}, digest) and not authorised({"authorization": "s3cret"}, digest)
    assert authorised({}, None), "no token set: open, as on loopback"


# ---------------------------------------------------------------- in process


@pytest.fixture(scope="module")
def reward(llscore_checkpoints):
    return LLScoreReward.from_pretrained(llscore_checkpoints["qwen2_5_vl"], hallucination_weight=WEIGHT)


def expected(reward, restored, degraded=None) -> np.ndarray:
    """The in-process reward of PIL images or paths, by `LLScore.score`."""
    results = reward.scorer.score(restored, degraded, batch_size=len(restored))
    return results.score - WEIGHT * results.p_hallucination


@pytest.mark.slow
def test_flow_grpo_and_verl_omni_in_process_signatures_give_the_scorers_numbers(
    reward, llscore_checkpoints, sample_images
):
    restored = [Image.open(p).convert("RGB").resize((64, 64)) for p in sample_images["restored"][:3]]
    degraded = [Image.open(p).convert("RGB").resize((64, 64)) for p in sample_images["degraded"][:3]]
    tensor = torch.from_numpy(np.stack([np.asarray(im) for im in restored])).permute(0, 3, 1, 2).float() / 255
    _fn = flow_grpo_reward(reward)
    scores, info = _fn(tensor, ["restore"] * 3, [{"degraded": image} for image in degraded])
    np.testing.assert_allclose(scores, expected(reward, restored, degraded), atol=1e-5)
    assert set(info) == {"quality", "p_hallucination", "errors"} and info["errors"] == [None] * 3
    nhwc, _ = _fn(np.stack([np.asarray(im) for im in restored]), ["restore"] * 3, [{}] * 3)
    np.testing.assert_allclose(nhwc, expected(reward, restored), atol=1e-5)

    chw = torch.from_numpy(np.array(restored[0])).permute(2, 0, 1).contiguous()
    result = asyncio.run(
        compute_score(
            data_source="llbench",
            solution_image=chw,
            ground_truth="restore the photo",
            extra_info={"degraded": degraded[0]},
            ckpt=str(llscore_checkpoints["qwen2_5_vl"]),
            hallucination_weight=WEIGHT,
        )
    )
    assert result["score"] == pytest.approx(expected(reward, restored[:1], degraded[:1])[0], abs=1e-5)


@pytest.mark.slow
def test_one_item_the_model_cannot_score_costs_only_its_own_reading(reward, sample_images, monkeypatch):
    images = [Image.open(p).convert("RGB") for p in sample_images["restored"][:3]]
    thin = Image.new("RGB", (800, 2))  # an aspect ratio the family refuses
    readings = score_items(reward, [Item(images[0]), Item(thin), Item(images[1]), Item(images[2])], 4)
    assert np.isnan(readings[1].reward) and "aspect" in readings[1].error and "\n" not in readings[1].error
    got = [readings[i].reward for i in (0, 2, 3)]
    np.testing.assert_allclose(got, expected(reward, images), atol=1e-5)

    score = reward.scorer.score

    def out_of_memory_on_the_second(restored, *args, **kwargs):  # any other failure: a bug, a full GPU
        if any(image is images[1] for image in restored):
            raise RuntimeError("CUDA out of memory")
        return score(restored, *args, **kwargs)

    monkeypatch.setattr(reward.scorer, "score", out_of_memory_on_the_second)
    readings = score_items(reward, [Item(image) for image in images], 3)
    assert readings[1].error == "RuntimeError: CUDA out of memory"
    assert readings[0].error is None and readings[2].error is None


@pytest.mark.slow
def test_pyiqa_creates_llscore_through_its_plugin_registry(llscore_checkpoints, reward, sample_images):
    """A fresh process: pyiqa's own registry loads the entry point, then `create_metric("llscore")` scores
    (target = restored, reference = degraded input) as `LLScore.score` does on the same tensors."""
    restored, degraded = sample_images["restored"][1], sample_images["degraded"][1]
    code = (
        "import sys, pyiqa\n"
        "from pyiqa.utils.registry import ARCH_REGISTRY\n"
        "assert 'llscore.pyiqa_plugin' not in sys.modules\n"
        "assert 'LLScore' in ARCH_REGISTRY  # pyiqa loads its plugins\n"
        f"metric = pyiqa.create_metric('llscore', ckpt={str(llscore_checkpoints['qwen2_5_vl'])!r}, hallucination_weight={WEIGHT}, device='cpu')\n"
        f"print(metric.metric_mode, metric.lower_better, float(metric({str(restored)!r}, {str(degraded)!r})))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    mode, lower_better, value = run.stdout.split()[-3:]
    assert (mode, lower_better) == ("FR", "False")
    from torchvision.transforms.functional import to_tensor

    tensors = (
        [to_tensor(Image.open(restored).convert("RGB"))],
        [to_tensor(Image.open(degraded).convert("RGB"))],
    )
    assert float(value) == pytest.approx(expected(reward, *tensors)[0], abs=1e-5)


# ---------------------------------------------------------------- the service on loopback


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def service(llscore_checkpoints, sample_images, tmp_path_factory):
    """`llscore serve` in its own process, as a user starts it; stopped with SIGTERM at the end (checked)."""
    pytest.importorskip("ray.serve")
    port = free_port()
    logs = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [
        sys.executable, "-m", "llscore.cli", "serve", "--ckpt", str(llscore_checkpoints["qwen2_5_vl"]),
        "--port", str(port), "--degraded-dir", str(sample_images["degraded"][0].parent),
        "--hallucination-weight", str(WEIGHT), "--max-image-pixels", str(160 * 160), "--max-request-mb", "2",
        "--max-batch-size", "8",
    ]  # fmt: skip
    env = {**os.environ, "RAY_DEDUP_LOGS": "0", "OMP_NUM_THREADS": "1"}
    with open(logs, "w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        try:
            ready = requests.get(url + "/ready", timeout=10).status_code == 200
            if ready and "[llscore] serving" in logs.read_text():  # its stop handlers are in place
                break
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(1)
    else:
        os.killpg(process.pid, signal.SIGKILL)  # the whole session: Ray's processes too
        pytest.fail("the service was not ready in 300 s:\n" + logs.read_text()[-3000:])
    family = [process, *psutil.Process(process.pid).children(recursive=True)]
    yield {"url": url, "process": process, "log": logs}
    process.send_signal(signal.SIGTERM)  # what Ctrl-C or a job scheduler sends
    try:
        code = process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        code = None
    _, alive = psutil.wait_procs(family, timeout=30)
    if code is None or alive:
        os.killpg(process.pid, signal.SIGKILL)
    assert code == 0, logs.read_text()[-3000:]
    assert not alive, f"left running after shutdown: {[p.name() for p in alive]}"


@pytest.mark.slow
def test_flow_grpo_client_code_gets_the_in_process_rewards(service, reward, sample_images):
    """flow_grpo/rewards.py `deqa_score_remote` (yifan123/flow_grpo), its `_fn` as written there, pointed at
    this service's route: float NCHW images, JPEG at Pillow's default quality, a pickled body."""
    from requests.adapters import HTTPAdapter, Retry

    url = service["url"] + "/flow_grpo"
    batch_size = 64
    sess = requests.Session()
    retries = Retry(total=1000, backoff_factor=1, status_forcelist=[500], allowed_methods=False)
    sess.mount("http://", HTTPAdapter(max_retries=retries))

    def _fn(images, prompts, metadata):
        del prompts
        if isinstance(images, torch.Tensor):
            images = (images * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
            images = images.transpose(0, 2, 3, 1)  # NCHW -> NHWC
        images_batched = np.array_split(images, np.ceil(len(images) / batch_size))
        all_scores = []
        for image_batch in images_batched:
            jpeg_images = []
            for image in image_batch:
                img = Image.fromarray(image)
                buffer = io.BytesIO()
                img.save(buffer, format="JPEG")
                jpeg_images.append(buffer.getvalue())
            data = {"images": jpeg_images}
            data_bytes = pickle.dumps(data)
            response = sess.post(url, data=data_bytes, timeout=120)
            response_data = pickle.loads(response.content)
            all_scores += response_data["outputs"]
        return all_scores, {}

    pixels = [np.asarray(Image.open(p).convert("RGB").resize((64, 64))) for p in sample_images["restored"]]
    images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255
    scores, _ = _fn(images, ["restore"] * len(pixels), [{}] * len(pixels))
    as_sent = [decoded(jpeg_bytes(Image.fromarray(p))) for p in pixels]  # what the service saw
    np.testing.assert_allclose(scores, expected(reward, as_sent), atol=1e-5)
    reply = safe_loads(
        sess.post(url, data=pickle.dumps({"images": [jpeg_bytes(as_sent[0])]}), timeout=60).content
    )
    assert reply["jpeg"] == [True], "a JPEG input is flagged: the evaluator sees its artefacts"


@pytest.mark.slow
def test_verl_omni_client_code_gets_the_in_process_rewards(service, reward, sample_images):
    """verl_omni/utils/reward_score/http_scorer_client.py `compute_score` (verl-project/verl-omni) as written
    there: one uint8 CHW image per request, the prompt (ground_truth) naming a registered degraded input."""
    aiohttp = pytest.importorskip("aiohttp")

    def _tensor_to_pil(image):
        if image.ndim == 4:
            image = image[0]
        image = image.permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(image)

    def _serialize_image(pil_image):
        if pil_image.mode != "RGB":
            pil_image = pil_image.convert("RGB")
        buf = io.BytesIO()
        pil_image.save(buf, format="JPEG")
        return buf.getvalue()

    async def verl_compute_score(
        solution_image, ground_truth, server_url, max_retries=2, retry_backoff=0.5, **kwargs
    ):
        loop = asyncio.get_running_loop()
        image_bytes = await loop.run_in_executor(
            None, lambda: _serialize_image(_tensor_to_pil(solution_image))
        )
        payload = pickle.dumps({"images": [image_bytes], "prompts": [ground_truth], "metadata": {}})
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            for attempt in range(max_retries + 1):
                try:
                    async with session.post(server_url, data=payload) as resp:
                        response_bytes = await resp.read()
                        if resp.status != 200:
                            retryable = resp.status in {408, 429} or 500 <= resp.status < 600
                            if not retryable:
                                raise RuntimeError(
                                    f"Scorer server returned HTTP {resp.status}: {response_bytes!r}"
                                )
                        else:
                            response_data = pickle.loads(response_bytes)
                            break
                except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError):
                    pass
                if attempt < max_retries:
                    await asyncio.sleep(retry_backoff * (2**attempt))
            else:
                raise RuntimeError("HTTP scoring failed")
        if "error" in response_data:
            raise RuntimeError(f"Scorer server error: {response_data['error']}")
        return {"score": float(response_data["scores"][0])}

    async def all_of_them(tensors, names):
        url = service["url"] + "/verl_omni"
        return await asyncio.gather(
            *(verl_compute_score(t, n, url) for t, n in zip(tensors, names, strict=True))
        )

    restored = [Image.open(p).convert("RGB") for p in sample_images["restored"]]
    tensors = [torch.from_numpy(np.array(im)).permute(2, 0, 1).contiguous() for im in restored]
    names = [p.name for p in sample_images["degraded"]]  # registered with --degraded-dir
    results = asyncio.run(all_of_them(tensors, names))
    as_sent = [decoded(jpeg_bytes(im)) for im in restored]
    want = expected(reward, as_sent, [Image.open(p) for p in sample_images["degraded"]])
    np.testing.assert_allclose([r["score"] for r in results], want, atol=1e-5)


@pytest.mark.slow
def test_unirl_client_code_on_png_gets_the_in_process_rewards(service, reward, sample_images):
    """unirl/reward/remote.py `RemoteRewardBackend` (Tencent-Hunyuan/UniRL): `_encode_image_b64` with its
    configurable image_format set to PNG, the two-turn edit history (condition image, then the generated one),
    `_post_score`'s session without proxies, and a failed item back as null with its error."""

    def _encode_image_b64(image, image_format="JPEG", quality=95):
        if image.mode != "RGB":
            image = image.convert("RGB")
        buf = io.BytesIO()
        save_kwargs = {"format": image_format}
        if image_format.upper() == "JPEG":
            save_kwargs["quality"] = quality
        image.save(buf, **save_kwargs)
        return base64.b64encode(buf.getvalue()).decode("ascii")

    session = requests.Session()
    session.trust_env = False
    restored = [Image.open(p) for p in sample_images["restored"]]
    degraded = [Image.open(p) for p in sample_images["degraded"]]
    wire_requests = [
        {
            "history": [
                {"text": "restore", "image_b64": _encode_image_b64(d, image_format="PNG")},
                {"text": "restore", "image_b64": _encode_image_b64(r, image_format="PNG")},
            ],
            "required_rewards": ["llscore"],
            "metadata": None,
        }
        for r, d in zip(restored, degraded, strict=True)
    ]
    wire_requests.append(
        {"history": [{"text": "x", "image_b64": "bm90IGFuIGltYWdl"}], "required_rewards": ["llscore"]}
    )
    resp = session.post(f"{service['url']}/score", json={"requests": wire_requests}, timeout=300)
    resp.raise_for_status()
    body = resp.json()
    got = [result["llscore"]["reward"] for result in body["results"][:-1]]
    np.testing.assert_allclose(
        got, expected(reward, sample_images["restored"], sample_images["degraded"]), atol=1e-5
    )
    assert list(body["results"][0]["llscore"]) == ["reward", "quality", "p_hallucination"]
    assert (
        body["results"][-1]["llscore"]["reward"] is None
        and "not a PNG or JPEG" in body["errors"][-1]["llscore"]
    )
    assert body["errors"][:-1] == [{}] * len(restored)


@pytest.mark.slow
def test_a_malicious_pickle_oversized_and_truncated_requests_are_refused_and_serving_goes_on(
    service, reward, sample_images, tmp_path
):
    url = service["url"]
    marker = tmp_path / "ran"
    refused = requests.post(url + "/verl_omni", data=pickle.dumps({"images": [_Planted(marker)]}), timeout=60)
    assert refused.status_code == 400 and "is refused" in safe_loads(refused.content)["error"]
    assert not marker.exists()
    truncated = requests.post(
        url + "/flow_grpo", data=pickle.dumps({"images": [b"x" * 100]})[:-30], timeout=60
    )
    assert truncated.status_code == 400 and "not a whole pickle" in safe_loads(truncated.content)["error"]
    too_big = requests.post(url + "/v1/score", data=b"x" * (3 << 20), timeout=60)
    assert too_big.status_code == 413 and "over the limit" in too_big.json()["error"]
    good = base64.b64encode(sample_images["restored"][0].read_bytes()).decode()
    huge = base64.b64encode(png_bytes(Image.new("RGB", (400, 400)))).decode()
    cut = base64.b64encode(sample_images["restored"][1].read_bytes()[:200]).decode()
    reply = requests.post(
        url + "/v1/score",
        json={"items": [{"restored": huge}, {"restored": cut}, {"restored": good}]},
        timeout=60,
    )
    first, second, third = reply.json()["results"]
    assert (
        first["reward"] is None
        and first["error"] == "items[0]: restored image: 400x400 is over the limit of 25,600 pixels"
    )
    assert (
        second["reward"] is None and "cut short or corrupt" in second["error"] and "\n" not in second["error"]
    )
    assert third["reward"] == pytest.approx(expected(reward, sample_images["restored"][:1])[0], abs=1e-5)
    unknown = requests.post(url + "/nowhere", data=b"{}", timeout=60)
    assert unknown.status_code == 404 and "/v1/score" in unknown.json()["error"]


@pytest.mark.slow
def test_ten_clients_two_hundred_requests_each_with_a_replica_killed_mid_run(service, reward, sample_images):
    """Every answer equals the in-process reward; the replica killed after a tenth of the requests comes back
    and no request is lost (the client retries what failed while it restarted); its memory does not grow."""
    from llscore.serving.client import LLScoreClient

    restored, degraded = sample_images["restored"], sample_images["degraded"]
    want = expected(reward, restored, degraded)
    client = LLScoreClient(service["url"], retries=8, backoff_s=0.5)
    warm = client.score(restored, degraded_ids=[p.name for p in degraded])
    np.testing.assert_allclose([r["reward"] for r in warm], want, atol=1e-5)
    before = client.ready()
    answers, failures, done = [], [], []
    lock = threading.Lock()

    def one_client(k: int):
        own = LLScoreClient(service["url"], retries=8, backoff_s=0.5)
        for n in range(200):
            i = (k + n) % len(restored)
            try:
                (reading,) = own.score([restored[i]], degraded_ids=[degraded[i].name])
                with lock:
                    answers.append((i, reading["reward"]))
            except Exception as err:  # counted, never silent
                with lock:
                    failures.append(repr(err))
            with lock:
                done.append(1)

    threads = [threading.Thread(target=one_client, args=(k,)) for k in range(10)]
    for thread in threads:
        thread.start()
    while len(done) < 200:
        time.sleep(0.2)
    os.kill(before["pid"], signal.SIGKILL)  # the replica process, mid-run
    for thread in threads:
        thread.join(timeout=900)
    assert not failures and len(answers) == 2000, failures[:3]
    got = np.array([value for _, value in answers])
    np.testing.assert_allclose(got, want[[i for i, _ in answers]], atol=1e-5)
    after = client.ready()
    assert after["pid"] != before["pid"], "the killed replica was replaced"
    ids = [p.name for p in degraded]
    client.score(restored * 6, degraded_ids=ids * 6)  # the new replica's first batches allocate
    settled = client.ready()["rss_bytes"]
    for _ in range(10):  # the same load again: memory flat
        client.score(restored * 6, degraded_ids=ids * 6)
    assert client.ready()["rss_bytes"] - settled < 64 << 20


def test_serve_refuses_a_missing_checkpoint_or_folder_in_one_line_before_ray_starts(
    llscore_checkpoints, tmp_path, capsys
):
    from llscore.cli import main

    assert main(["serve", "--ckpt", str(tmp_path / "none")]) == 2
    checkpoint = str(llscore_checkpoints["qwen2_5_vl"])
    assert main(["serve", "--ckpt", checkpoint, "--degraded-dir", str(tmp_path / "no")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "no such local folder" in lines[0] and "--degraded-dir" in lines[1], lines
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
