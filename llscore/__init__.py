"""LL-Score: a multimodal-LLM evaluator of restored images, aligned with human preferences.

Importing it changes nothing outside it: the entry points that load a model call
`llscore.hub_kernels.keep_bitsandbytes_off_the_hub()` themselves (docs/architecture.md)."""

__version__ = "0.1.0"

__all__ = ["LLScore", "LLScoreReward"]


def __getattr__(name):
    """Import lazily so that `import llscore.data` stays light (no torch / transformers)."""
    if name == "LLScore":
        from llscore.api import LLScore

        return LLScore
    if name == "LLScoreReward":
        from llscore.reward import LLScoreReward

        return LLScoreReward
    raise AttributeError(f"module 'llscore' has no attribute {name!r}")
