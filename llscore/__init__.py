"""LL-Score: a multimodal-LLM evaluator of restored images, aligned with human preferences."""

import logging
import os

__version__ = "0.1.0"

BITSANDBYTES_HUB_KERNEL = "kernels-community/quantization-bitsandbytes"
HUB_KERNELS_ENV = "LLSCORE_HUB_KERNELS"


def _keep_bitsandbytes_off_the_hub() -> None:
    """bitsandbytes' CPU backend asks the Hub for an optional 4-bit kernel whenever it is imported (transformers'
    Trainer and peft import it): a request nobody asked for, made by every `llscore` command that loads a model,
    and a warning when offline. LL-Score uses bitsandbytes' built-in CPU path, the one its QLoRA recipe is tested
    with, unless LLSCORE_HUB_KERNELS=1 asks for the Hub kernel (docs/architecture.md). Other kernels pass."""
    if os.environ.get(HUB_KERNELS_ENV) == "1":
        return
    try:
        import kernels
    except ImportError:
        return
    hub_get_kernel = kernels.get_kernel
    if getattr(hub_get_kernel, "keeps_bitsandbytes_off_the_hub", False):
        return

    def get_kernel(repo_id: str, *args, **kwargs):
        if repo_id == BITSANDBYTES_HUB_KERNEL:
            raise RuntimeError(f"{repo_id} is not fetched unless {HUB_KERNELS_ENV}=1")
        return hub_get_kernel(repo_id, *args, **kwargs)

    get_kernel.keeps_bitsandbytes_off_the_hub = True
    kernels.get_kernel = get_kernel


_keep_bitsandbytes_off_the_hub()
# bitsandbytes then logs that the optional kernel could not be loaded; the built-in CPU path it uses instead is
# the one LL-Score's QLoRA path is tested with, so the line only buries real output.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
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
