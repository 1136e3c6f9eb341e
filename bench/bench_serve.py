"""Throughput and latency of `llscore serve` against in-process scoring, on this machine (docs/serving.md).

    python bench/bench_serve.py --ckpt checkpoints/llscore-tiny [--clients 1 4 10] [--requests 100]

In process: `LLScore.score` one image at a time, then in batches of `--batch-size`. Served: `llscore serve` in
its own process on loopback, `--clients` concurrent clients each sending `--requests` one-image requests of
LL-Score's JSON protocol (the service batches across clients). Every served answer is checked against the
in-process reward. Writes a JSON record and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from llscore import LLScoreReward
from llscore.serving.client import LLScoreClient


def sample_pairs(n: int, size: int, folder: Path) -> tuple[list[Path], list[Path]]:
    """n smooth random (restored, degraded) PNG pairs of `size` px."""
    rng = np.random.default_rng(0)
    restored, degraded = [], []
    for i in range(n):
        base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        clean = Image.fromarray(base).resize((size, size), Image.BICUBIC)
        noisy = np.clip(np.asarray(clean, dtype=np.int16) + rng.integers(-30, 31, (size, size, 3)), 0, 255)
        restored.append(folder / f"pair_{i}.png")
        degraded.append(folder / "degraded" / f"pair_{i}.png")
        degraded[-1].parent.mkdir(exist_ok=True)
        clean.save(restored[-1])
        Image.fromarray(noisy.astype(np.uint8)).save(degraded[-1])
    return restored, degraded


def in_process(reward: LLScoreReward, restored, degraded, batch_size: int, rounds: int) -> dict:
    """Seconds per image one at a time, and images per second in batches."""
    reward(restored[:batch_size], degraded[:batch_size])  # warm-up
    latencies = []
    for _ in range(rounds):
        for r, d in zip(restored, degraded, strict=True):
            start = time.perf_counter()
            reward([r], [d])
            latencies.append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(rounds):
        for i in range(0, len(restored), batch_size):
            reward(restored[i : i + batch_size], degraded[i : i + batch_size])
    batched = rounds * len(restored) / (time.perf_counter() - start)
    return {
        "one_at_a_time_p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "one_at_a_time_p99_ms": 1000 * float(np.percentile(latencies, 99)),
        "one_at_a_time_images_per_s": 1 / float(np.mean(latencies)),
        f"batch_{batch_size}_images_per_s": batched,
    }


def served(url: str, restored, degraded, want: np.ndarray, clients: int, requests_each: int) -> dict:
    latencies, errors, lock = [], [], threading.Lock()

    def one_client(k: int):
        client = LLScoreClient(url)
        for n in range(requests_each):
            i = (k + n) % len(restored)
            start = time.perf_counter()
            (reading,) = client.score([restored[i]], degraded_ids=[degraded[i].name])
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if reading["reward"] is None or abs(reading["reward"] - want[i]) > 1e-5:
                    errors.append((i, reading))

    threads = [threading.Thread(target=one_client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {
        "clients": clients,
        "requests": clients * requests_each,
        "requests_per_s": clients * requests_each / wall,
        "p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "p99_ms": 1000 * float(np.percentile(latencies, 99)),
        "answers_differing_from_in_process": len(errors),
    }


def start_service(ckpt: str, degraded_dir: Path, batch: int, cpus: float) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "llscore.cli", "serve", "--ckpt", ckpt, "--port", str(port)]
    command += ["--degraded-dir", str(degraded_dir), "--max-batch-size", str(batch)]
    command += ["--cpus-per-replica", str(cpus)]  # Ray gives a replica as many threads as CPUs
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if requests.get(url + "/ready", timeout=10).status_code == 200:
                return process, url
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(1)
    process.kill()
    raise RuntimeError("llscore serve was not ready in 300 s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", default="checkpoints/llscore-tiny")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--requests", type=int, default=100, help="requests per client")
    parser.add_argument("--images", type=int, default=16, help="distinct image pairs")
    parser.add_argument("--size", type=int, default=112, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="in-process passes over the images")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0, help="passed to llscore serve")
    parser.add_argument("--out", default="bench/results/serve.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        restored, degraded = sample_pairs(args.images, args.size, Path(tmp))
        reward = LLScoreReward.from_pretrained(args.ckpt)
        want = reward(restored, degraded).numpy()
        record = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "checkpoint": args.ckpt,
            "image_px": args.size,
            "cpus_per_replica": args.cpus_per_replica,
            "in_process": in_process(reward, restored, degraded, args.batch_size, args.rounds),
            "served": [],
        }
        process, url = start_service(args.ckpt, degraded[0].parent, args.batch_size, args.cpus_per_replica)
        try:
            served(url, restored, degraded, want, 1, 10)  # warm-up
            for clients in args.clients:
                record["served"].append(served(url, restored, degraded, want, clients, args.requests))
        finally:
            process.terminate()
            process.wait(timeout=120)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    local = record["in_process"]
    print("| path | clients | images/s | p50 ms | p99 ms |\n| --- | --- | --- | --- | --- |")
    print(
        f"| in process, one at a time | 1 | {local['one_at_a_time_images_per_s']:.1f} | "
        f"{local['one_at_a_time_p50_ms']:.0f} | {local['one_at_a_time_p99_ms']:.0f} |"
    )
    print(
        f"| in process, batches of {args.batch_size} | 1 | {local[f'batch_{args.batch_size}_images_per_s']:.1f} | | |"
    )
    for row in record["served"]:
        print(
            f"| served | {row['clients']} | {row['requests_per_s']:.1f} | {row['p50_ms']:.0f} | {row['p99_ms']:.0f} |"
            + (
                f" ({row['answers_differing_from_in_process']} answers differ)"
                if row["answers_differing_from_in_process"]
                else ""
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
