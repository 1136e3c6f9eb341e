"""One entry per base-model family: everything LL-Score's code needs to know about a Qwen-VL generation's layout
(docs/architecture.md). Loading, LoRA, quantisation, the optimizer's parameter groups, the tiny base's
pretraining and the real-size checks read it. The library needs one entry in `FAMILIES` for a family whose
checkpoints transformers loads with this layout; the tests and tools need more of a new family (a tiny spec in
`llscore_sim.tiny.TINY_SPECS`, its name among the tested families, its processor files among the shared test
fixtures, its public architectures in configs/models/ for the real-size checks): docs/architecture.md, "One entry
per model family", lists them.

The family also owns how its image processor is driven: the `size` argument a resolution rule becomes, the
aspect limit, the resize to whole visual tokens (differentiable, for the reward) and the visual-token grid. A
loaded checkpoint's own processor supplies the patch and merge sizes it was built with; the family's
`patch_size` and `merge_size` are those of its public architectures, which the tiny builder
(`llscore_sim.tiny`) and the memory estimates (bench/) use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch.nn import ModuleList

from llscore.errors import ConfigError, ImageError

QWEN_LLM_LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelFamily:
    """A base-model family as `transformers` lays it out (`AutoModelForImageTextToText`)."""

    model_type: str
    """`config.model_type` of its checkpoints: how a loaded model finds its entry."""
    vision_linear_layers: tuple[str, ...]
    """The vision tower's linear layers (LoRA on the vision tower, `lora_include_vision`)."""
    real_size: tuple[str, ...] = ()
    """Its public architectures in configs/models/ (bench/gpu_check.py, bench/estimate_memory.py)."""
    recipe: str = "llscore_qwen"
    """The recipe (configs/) whose resolution rule its real-size models are scored under."""
    vision_tower: str = "model.visual"
    """The vision tower's module path from the top-level model (also kept unquantised by QLoRA)."""
    language_model: str = "model.language_model"
    """The LLM's module path from the top-level model."""
    llm_linear_layers: tuple[str, ...] = QWEN_LLM_LINEAR_LAYERS
    """The LLM's linear layers, LoRA's default targets (`lora_target_layers`)."""
    projectors: tuple[str, ...] = ("model.visual.merger",)
    """The projector's module paths: what maps visual tokens into the LLM's embedding space (`train_projector`)."""
    processor_class: str = "Qwen2_5_VLProcessor"
    """Its processor's class name: how a processor alone (no model at hand, e.g. in a data-loader worker) finds
    its family."""
    patch_size: int = 14
    """Pixels per patch side in its public architectures."""
    merge_size: int = 2
    """Patches per visual-token side in its public architectures (2: a 2 x 2 square of patches is one token)."""
    max_aspect_ratio: int = 200
    """The longest side over the shortest that its image processor accepts."""

    def image_size(self, rule) -> dict[str, int]:
        """A resolution rule (`llscore.prompts.ResolutionRule`) as the image processor's `size` argument."""
        return {"shortest_edge": rule.min_pixels, "longest_edge": rule.max_pixels}

    def check_aspect(self, width: int, height: int, name: str) -> None:
        """One line naming the image when its processor would refuse its aspect ratio."""
        if max(width, height) > self.max_aspect_ratio * min(width, height):
            raise ImageError(
                f"{name}: {width}x{height} pixels; {self.model_type} processors accept aspect ratios up to "
                f"{self.max_aspect_ratio}:1"
            )

    def token_side(self, image_processor=None) -> int:
        """Pixels per visual-token side: the processor's patch times merge size (the family's without one)."""
        if image_processor is None:
            return self.patch_size * self.merge_size
        return image_processor.patch_size * image_processor.merge_size

    def visual_token_grid(self, height: int, width: int, rule, image_processor=None) -> tuple[int, int]:
        """Rows and columns of visual tokens of a `height` x `width` image under `rule`: the image processor's
        own resize to whole tokens within the rule's pixel bounds."""
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        side = self.token_side(image_processor)
        rows, columns = smart_resize(
            height, width, factor=side, min_pixels=rule.min_pixels, max_pixels=rule.max_pixels
        )
        return rows // side, columns // side

    def resize(self, image_processor, pixels, rule):
        """A (batch, 3, H, W) float tensor on the 0-255 scale resized as the image processor resizes (its own
        torch resize to whole visual tokens, so the result stays differentiable), clamped to [0, 255] as its
        8-bit path is."""
        from transformers.image_utils import SizeDict

        resized = image_processor.resize(
            pixels,
            size=SizeDict(**self.image_size(rule)),
            resample=image_processor.resample,
            factor=self.token_side(image_processor),
        )
        return resized.clamp(0, 255)

    def is_vision_parameter(self, name: str) -> bool:
        """Whether a parameter (by its name in the model, a peft wrapper's prefixes allowed) is the vision tower's."""
        return f"{self.vision_tower.rsplit('.', 1)[-1]}." in name

    def is_projector_parameter(self, name: str) -> bool:
        """Whether a parameter (by its name, a peft wrapper's prefixes allowed) is the projector's."""
        return any(f"{path.split('.', 1)[-1]}." in name for path in self.projectors)

    def projector_modules(self, model) -> list[str]:
        """The projector's module paths in a loaded model, a module list (Qwen3-VL's deepstack mergers) as its
        entries: what peft's `modules_to_save` trains whole under LoRA."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        paths = []
        for path in self.projectors:
            module = base.get_submodule(path)
            children = (
                [f"{path}.{i}" for i in range(len(module))] if isinstance(module, ModuleList) else [path]
            )
            paths += children
        return paths

    def lora_pattern(self, target_layers: list[str] | tuple[str, ...], include_vision: bool) -> str:
        """The regular expression of the modules LoRA wraps (peft's `target_modules`)."""
        llm = rf".*{re.escape(self.language_model.rsplit('.', 1)[-1])}.*\.({'|'.join(target_layers)})"
        if not include_vision:
            return llm
        tower = re.escape(self.vision_tower.rsplit(".", 1)[-1])
        return rf"({llm})|(.*{tower}.*\.({'|'.join(self.vision_linear_layers)}))"

    def vision_tower_of(self, model):
        """The vision tower module of a loaded model (unwrapping peft)."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return base.get_submodule(self.vision_tower)


FAMILIES: dict[str, ModelFamily] = {
    "qwen2_vl": ModelFamily("qwen2_vl", ("qkv", "proj", "fc1", "fc2"), processor_class="Qwen2VLProcessor"),
    "qwen2_5_vl": ModelFamily(
        "qwen2_5_vl",
        ("qkv", "proj", "gate_proj", "up_proj", "down_proj"),
        real_size=("qwen2_5_vl_7b", "qwen2_5_vl_3b"),
    ),
    "qwen3_vl": ModelFamily(
        "qwen3_vl",
        ("qkv", "proj", "linear_fc1", "linear_fc2"),
        real_size=("qwen3_vl_8b",),
        recipe="llscore_qwen3vl",
        projectors=("model.visual.merger", "model.visual.deepstack_merger_list"),
        processor_class="Qwen3VLProcessor",
        patch_size=16,
    ),
}


def family_of(config) -> ModelFamily:
    """The family of a model config (or a model: its `.config`), by `model_type`; an unknown one is one line."""
    model_type = getattr(getattr(config, "config", config), "model_type", None)
    if model_type not in FAMILIES:
        raise ConfigError(
            f"model type {model_type!r} is not a family LL-Score knows ({', '.join(FAMILIES)}); a new family "
            "starts with an entry in llscore/families.py (docs/architecture.md lists what else it takes)"
        )
    return FAMILIES[model_type]


def family_of_processor(processor) -> ModelFamily:
    """The family of a processor, by its class; an unknown one is one line."""
    name = type(processor).__name__
    for family in FAMILIES.values():
        if family.processor_class == name:
            return family
    raise ConfigError(
        f"processor {name} is not a family LL-Score knows ({', '.join(FAMILIES)}); a new family starts with an "
        "entry in llscore/families.py (docs/architecture.md lists what else it takes)"
    )


def family_of_real_size(name: str) -> ModelFamily:
    """The family of a public architecture in configs/models/ (e.g. qwen2_5_vl_7b)."""
    for family in FAMILIES.values():
        if name in family.real_size:
            return family
    known = [n for family in FAMILIES.values() for n in family.real_size]
    raise ConfigError(f"no family lists the architecture {name!r}; known: {', '.join(known)}")
