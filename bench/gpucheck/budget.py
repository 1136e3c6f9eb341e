"""The real-size CPU run's estimates: the time of each part from its FLOPs at the measured bf16 matmul rate (then
at the measured forward rate), which decide before a part starts whether it fits the budget (bench/gpu_check.py;
docs/performance.md)."""

from __future__ import annotations

import torch

from .common import timed
from .models import architecture


def forward_flops(name: str, side: int, items: int) -> float:
    """Prefill FLOPs of `items` questions, each over a degraded input and a restoration of `side` px."""
    counts = architecture(name)
    visual = 2 * (side // counts["token_side"]) ** 2
    patches = visual * counts["patches_per_token"]
    tokens = visual + 110
    return items * 2.0 * ((counts["llm"] - counts["embeddings"]) * tokens + counts["vision"] * patches)


def matmul_rate(device: str) -> float:
    """FLOP/s of a bf16 matrix product of the size an LLM layer runs (1024 x 4096 @ 4096 x 4096)."""
    a = torch.randn(1024, 4096, dtype=torch.bfloat16, device=device)
    b = torch.randn(4096, 4096, dtype=torch.bfloat16, device=device)
    a @ b
    seconds = min(timed(lambda: a @ b, device) for _ in range(3))
    return 2 * 1024 * 4096 * 4096 / seconds


class CpuBudget:
    """Time and memory estimates that decide, before each real-size CPU part, whether it can run."""

    LOAD_BYTES_PER_S = 1e9  # reading a bf16 checkpoint from the page cache or disk
    SAVE_BYTES_PER_S = 3e8
    EFFICIENCY = 0.5  # until a forward is measured: about half the matmul rate (attention, norms, casts)
    SAFETY = 1.3  # estimates are rough: a part starts only if 1.3x its estimate fits

    def __init__(self, max_rss_gb: float, deadline: float, device: str = "cpu"):
        self.max_rss = max_rss_gb * 1e9
        self.deadline = deadline  # no part runs past it (monotonic seconds)
        self.matmul_flops_per_s = matmul_rate(device)
        self.forward_flops_per_s = self.EFFICIENCY * self.matmul_flops_per_s
        self.generate_forwards = (
            1.6  # generate-and-parse ~ 1.6 bare forwards (Qwen2.5-VL-7B, 448 px, batch 1)
        )

    def observe(self, row: dict) -> None:
        """Take the forward rate and the cost of generation from a measured scoring row."""
        self.forward_flops_per_s = row["bare_forward_gflop_per_s"] * 1e9
        if "generate_quality_images_per_s" in row:
            self.generate_forwards = row["bare_forward_images_per_s"] / row["generate_quality_images_per_s"]

    def seconds(self, flops: float, load_bytes: float = 0.0) -> float:
        return self.SAFETY * (flops / self.forward_flops_per_s + load_bytes / self.LOAD_BYTES_PER_S)

    def build_s(self, name: str) -> float:
        return self.SAFETY * 2 * architecture(name)["total"] / self.SAVE_BYTES_PER_S

    def training_s(self, name: str, side: int) -> float:
        # one pair: 2 restorations x 2 questions; forward, recomputation and backward ~ 4 forwards
        return self.seconds(4 * forward_flops(name, side, 4), 2 * architecture(name)["total"])

    def scoring_s(self, name: str, side: int, batch: int, loaded: bool) -> float:
        # one-pass and bare forward: two quality forwards per image; generate-and-parse at batch 1 only
        forwards = 2 + (self.generate_forwards if batch == 1 else 0)
        load = 0 if loaded else 2 * architecture(name)["total"]
        return self.seconds(forwards * forward_flops(name, side, batch), load)
