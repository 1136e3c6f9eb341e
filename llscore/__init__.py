"""LL-Score: a multimodal-LLM evaluator of restored images, aligned with human preferences."""

import logging

__version__ = "0.1.0"

# bitsandbytes warns on every import of its CPU backend that an optional kernel package is missing; the CPU
# fallback it then uses is the one LL-Score's QLoRA path is tested with, so the line only buries real output.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
__all__ = ["LLScore", "LLScoreReward"]


def __getattr__(name):
    """Import lazily so that `import llscore.data` stays light (no torch / transformers)."""
    if name == "LLScore":
        from llscore.evaluator import LLScore

        return LLScore
    if name == "LLScoreReward":
        from llscore.reward import LLScoreReward

        return LLScoreReward
    raise AttributeError(f"module 'llscore' has no attribute {name!r}")
