"""No request nobody asked for (docs/architecture.md): bitsandbytes' CPU backend asks the Hub for an optional
4-bit kernel whenever it is imported (transformers' Trainer and peft import it). An entry point that loads a model
calls `keep_bitsandbytes_off_the_hub()` before bitsandbytes is first imported; `import llscore` alone changes
nothing."""

from __future__ import annotations

import logging
import os

BITSANDBYTES_HUB_KERNEL = "kernels-community/quantization-bitsandbytes"
HUB_KERNELS_ENV = "LLSCORE_HUB_KERNELS"

logger = logging.getLogger(__name__)


def keep_bitsandbytes_off_the_hub() -> bool:
    """Refuse bitsandbytes' Hub kernel in this process, so that bitsandbytes uses its built-in CPU path, the one
    LL-Score's QLoRA recipe is tested with; every other kernel passes. `LLSCORE_HUB_KERNELS=1` lets the Hub kernel
    through. Takes effect only if called before bitsandbytes is first imported; calling it again is harmless.
    Returns whether the refusal is in place."""
    # bitsandbytes logs that an optional kernel could not be loaded; the built-in CPU path it uses instead is the
    # one LL-Score's QLoRA path is tested with, so the line only buries real output.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    if os.environ.get(HUB_KERNELS_ENV) == "1":
        return False
    try:
        import kernels
    except ImportError:  # nothing to refuse: bitsandbytes finds no Hub kernel without `kernels`
        return False
    hub_get_kernel = kernels.get_kernel
    if not getattr(hub_get_kernel, "keeps_bitsandbytes_off_the_hub", False):

        def get_kernel(repo_id: str, *args, **kwargs):
            if repo_id == BITSANDBYTES_HUB_KERNEL:
                raise RuntimeError(f"{repo_id} is not fetched unless {HUB_KERNELS_ENV}=1")
            return hub_get_kernel(repo_id, *args, **kwargs)

        get_kernel.keeps_bitsandbytes_off_the_hub = True
        kernels.get_kernel = get_kernel
        logger.debug(
            "bitsandbytes' Hub kernel %s refused (%s=1 allows it)", BITSANDBYTES_HUB_KERNEL, HUB_KERNELS_ENV
        )
    return True
