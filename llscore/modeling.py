"""Loading LL-Score's model: a Qwen-VL base, a full or merged checkpoint, or a LoRA adapter; LoRA / QLoRA setup.

Everything goes through `AutoModelForImageTextToText` + `AutoProcessor`: no remote code. A checkpoint
directory is recognised by what it holds: `adapter_config.json` (a peft adapter over a base resolved from
`llscore_config.json` or the adapter config) or plain model weights (full fine-tune or merged adapter).
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

from llscore.errors import CheckpointError, ConfigError, reason
from llscore.families import ModelFamily, family_of
from llscore.files import weights_like_other_files, write_atomic
from llscore.formulations import OWN_FILES, check_own_files, formulation_of
from llscore.prompts import LLScoreConfig, check_formulation
from llscore.runtime import DTYPE_NAMES
from llscore.scoring import check_answer_words

logger = logging.getLogger(__name__)

LLSCORE_CONFIG_NAME = "llscore_config.json"
ADAPTER_CONFIG_NAME = "adapter_config.json"
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


@dataclass
class ModelConfig:
    """Which weights to load, how, how they answer (`formulation`, docs/training.md) and which of them train.

    `freeze_vision_tower` freezes the vision encoder but not its projector; `train_projector` trains the projector
    whole (under LoRA too, as peft's `modules_to_save`), False freezes it, None leaves it as the rest of the
    model (trained by full fine-tuning, frozen under LoRA)."""

    model_name_or_path: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    quantization: str | None = None
    formulation: str = "levels"
    freeze_vision_tower: bool = False
    train_projector: bool | None = None

    def __post_init__(self):
        check_formulation(self.formulation)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.quantization not in (None, "4bit", "8bit"):
            raise ValueError(f"quantization must be null, '4bit' or '8bit', got {self.quantization!r}")


@dataclass
class LoraSettings:
    """LoRA on the language model's linear layers; the vision tower only when asked. The `lora_` prefix keeps
    the keys apart in a flat recipe (llscore/config.py)."""

    use_lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_layers: list[str] | None = None
    """None: the family's LLM linear layers (llscore/families.py)."""
    lora_include_vision: bool = False

    def target_layers(self, family: ModelFamily) -> list[str]:
        return list(self.lora_target_layers or family.llm_linear_layers)

    def peft_config(
        self,
        family: ModelFamily,
        modules_to_save: list[str] | None = None,
        trainable_token_ids: tuple[int, ...] = (),
    ):
        """peft's config for a model of `family` (its module paths: llscore/families.py), with the modules trained
        whole (the projector) and the embedding rows trained alone (the head tokens)."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=family.lora_pattern(self.target_layers(family), self.lora_include_vision),
            modules_to_save=modules_to_save or None,
            trainable_token_indices={"embed_tokens": list(trainable_token_ids)}
            if trainable_token_ids
            else None,
            bias="none",
        )


@contextlib.contextmanager
def peft_wrapping():
    """Around peft's wrapping of a model: peft (0.21) reads `model.is_gradient_checkpointing`, an alias that
    transformers 5 deprecates with a FutureWarning on every read, so each adapter load printed one that no user
    can act on. Only that warning is ignored, and only here; any other shows as usual."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="`is_gradient_checkpointing` is deprecated",
            category=FutureWarning,
            module="transformers.modeling_utils",
        )
        yield


def lora_wrapped_layers(model) -> list[str]:
    """The names of the layers (last name component) that LoRA wraps in `model`."""
    return sorted(
        {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")}
    )


def unmatched_lora_targets(model, target_layers: list[str]) -> list[str]:
    """The names in `target_layers` that no LoRA-wrapped module of `model` carries (a typo, or another
    architecture's naming): a LoRA run must not silently train fewer layers than asked."""
    wrapped = set(lora_wrapped_layers(model))
    return [name for name in target_layers if name not in wrapped]


class ZeroShotWarning(UserWarning):
    """An untrained base model is being scored zero-shot with the default prompt contract."""


def read_llscore_config(path: str | Path) -> LLScoreConfig | None:
    file = Path(path) / LLSCORE_CONFIG_NAME
    if not file.is_file():
        return None
    try:
        return LLScoreConfig.from_dict(json.loads(file.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{file}: not a valid LL-Score config: {err}") from err


def write_llscore_config(config: LLScoreConfig, out: str | Path) -> None:
    write_atomic(Path(out) / LLSCORE_CONFIG_NAME, json.dumps(config.to_dict(), indent=2) + "\n")


def quantization_config(model_config: ModelConfig, family: ModelFamily) -> BitsAndBytesConfig | None:
    """bitsandbytes settings for QLoRA; the vision tower and the LM head stay in full precision."""
    if model_config.quantization is None:
        return None
    keep = [family.vision_tower, "lm_head"]
    if model_config.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=keep)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=DTYPES[model_config.dtype],
        llm_int8_skip_modules=keep,
    )


def load_processor(path: str | Path, llscore_config: LLScoreConfig):
    processor = AutoProcessor.from_pretrained(str(path))
    processor.tokenizer.padding_side = "left"
    check_answer_words(processor.tokenizer, llscore_config.prompts)
    return processor


def _load_weights(path: str | Path, model_config: ModelConfig):
    """The model at a local folder or a Hub id; a failure is one `CheckpointError` that says which was tried."""
    local = Path(path).expanduser()
    if not local.is_dir() and str(path).startswith((".", "/", "~")):
        raise CheckpointError(f"{path}: no such local folder")
    source = str(local if local.is_dir() else path)
    try:
        quantization = None
        if model_config.quantization is not None:  # which modules stay unquantised depends on the family
            quantization = quantization_config(model_config, family_of(AutoConfig.from_pretrained(source)))
        return AutoModelForImageTextToText.from_pretrained(
            source,
            dtype=DTYPES[model_config.dtype],
            attn_implementation=model_config.attn_implementation,
            quantization_config=quantization,
        )
    # no such folder or repo, offline, a folder without config.json, a weight file cut short, ...
    except (OSError, ValueError, SafetensorError) as err:
        if local.is_dir():
            raise CheckpointError(f"{path}: cannot load a model from this folder ({reason(err)})") from err
        raise hub_unavailable(path, err) from err


def keep_training_layout(model) -> None:
    """On CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights for inference the first time an eval-mode layer
    runs without gradients, and never packs them back: training after a validation then fails inside
    `matmul_4bit`. A model that is being trained keeps the training layout (GPUs have no such repacking)."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            if not hasattr(module, "support_avx512bf16_for_cpu"):
                logger.warning(
                    "bitsandbytes no longer has support_avx512bf16_for_cpu: CPU validation may repack"
                )
                return
            module.support_avx512bf16_for_cpu = False


def load_for_training(
    model_config: ModelConfig,
    lora: LoraSettings,
    llscore_config: LLScoreConfig,
    activation_checkpointing: bool = False,
):
    """Base (or earlier LL-Score) weights ready to train: LoRA / QLoRA wrapped, or all weights trainable.
    Activation checkpointing (`TrainingArguments.activation_checkpointing`) is switched on before the model is
    wrapped, as peft's 4-bit preparation needs; the trainer's own switch later changes nothing."""
    model = _load_weights(model_config.model_name_or_path, model_config)
    processor = load_processor(model_config.model_name_or_path, llscore_config)
    family = family_of(model.config)
    formulation = formulation_of(llscore_config)
    trainable_token_ids = formulation.setup_for_training(
        model, processor.tokenizer, llscore_config.prompts, Path(model_config.model_name_or_path).expanduser()
    )
    if lora.lora_include_vision and model_config.train_projector:
        raise ConfigError(
            "lora_include_vision and train_projector both train the projector (LoRA on it, and all of it): "
            "choose one"
        )
    freeze_vision_parts(model, family, model_config)
    if activation_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if model_config.quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(  # non-reentrant: DDP sees two forward passes per step
            model,
            use_gradient_checkpointing=activation_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        keep_training_layout(model)
    if lora.use_lora or model_config.quantization is not None:
        from peft import get_peft_model

        projector = family.projector_modules(model) if model_config.train_projector else None
        with peft_wrapping():
            model = get_peft_model(model, lora.peft_config(family, projector, trainable_token_ids))
        unmatched = unmatched_lora_targets(model, lora.target_layers(family))
        if unmatched:
            raise ConfigError(f"lora_target_layers {unmatched} match no linear layer of the language model")
        formulation.after_wrapping(model)
    return model, processor


def freeze_vision_parts(model, family: ModelFamily, model_config: ModelConfig) -> None:
    """The vision encoder frozen (`freeze_vision_tower`) and the projector frozen or trained
    (`train_projector`), before any LoRA wrapping decides the rest."""
    for name, param in model.named_parameters():
        if family.is_projector_parameter(name):
            if model_config.train_projector is not None:
                param.requires_grad_(model_config.train_projector)
        elif model_config.freeze_vision_tower and family.is_vision_parameter(name):
            param.requires_grad_(False)


def resolve_checkpoint(path_or_hub_id: str | Path) -> Path:
    """A local directory as is; a Hub id through the local cache or a download (`huggingface_hub`).

    The local folder is tried first; when it does not exist and the Hub cannot serve the name either, the one-line
    `CheckpointError` says both.
    """
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path}: a file, not a checkpoint folder")
    if str(path_or_hub_id).startswith((".", "/", "~")):
        raise CheckpointError(f"{path}: no such local folder")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(path_or_hub_id)))
    # validation, offline mode, a missing or gated repo, no network: each means "not available"
    except Exception as err:
        raise hub_unavailable(path_or_hub_id, err) from err


def hub_unavailable(name: str | Path, err: Exception) -> CheckpointError:
    """The error for a name that is no local folder and that the Hub did not serve, with the Hub's reason in
    one line."""
    return CheckpointError(
        f"{name}: no such local folder, and as a Hub id it could not be loaded ({reason(err)})"
    )


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint as its files describe it, before any weight is read: enough for a backend to load it its own
    way (llscore/backends.py)."""

    name: str | Path
    """As the user named it: a Hub id stays a Hub id, not the snapshot folder of the download cache."""
    folder: Path
    config: LLScoreConfig
    adapter: bool

    @property
    def base(self) -> str | None:
        """The base model an adapter loads over (its contract's, else its adapter_config.json's)."""
        if not self.adapter:
            return None
        return self.config.base_model or json.loads((self.folder / ADAPTER_CONFIG_NAME).read_text()).get(
            "base_model_name_or_path"
        )


def locate_checkpoint(path_or_hub_id: str | Path, zero_shot: bool = False) -> CheckpointRef:
    """The checkpoint at a local folder or Hub id, its contract read and its formulation's files checked.

    `zero_shot=True` also accepts a base model without `llscore_config.json`: it is scored with the default
    prompt contract and resolution rule (`LLScoreConfig()`) and a `ZeroShotWarning` is emitted. A directory
    that has an `llscore_config.json` loads with its own contract either way.
    """
    path = resolve_checkpoint(path_or_hub_id)
    name = path if Path(path_or_hub_id).expanduser().is_dir() else path_or_hub_id
    adapter = (path / ADAPTER_CONFIG_NAME).is_file()
    llscore_config = read_llscore_config(path)
    if llscore_config is None:
        if not zero_shot:
            raise CheckpointError(
                f"{name}: no {LLSCORE_CONFIG_NAME}; this is not an LL-Score checkpoint (its prompt contract and "
                "resolution rule are unknown). Train one with train.py, save one with LLScore.save_pretrained, "
                "or pass zero_shot=True (--zero-shot on the command line) to score a base model zero-shot with "
                "the default prompt contract."
            )
        # an adapter without a contract keeps the base its adapter_config.json names
        llscore_config = LLScoreConfig(base_model=None if adapter else str(path_or_hub_id))
        warnings.warn(
            f"{path_or_hub_id}: no {LLSCORE_CONFIG_NAME}; scoring an untrained base model zero-shot with the "
            "default prompt contract and resolution rule",
            ZeroShotWarning,
            stacklevel=3,  # the caller of LLScore.from_pretrained
        )
    check_own_files(formulation_of(llscore_config), path, name)
    return CheckpointRef(name, path, llscore_config, adapter)


def load_model(ref: CheckpointRef, model_config: ModelConfig | None = None):
    """The transformers model and processor of a located checkpoint, ready to score (eval mode); an adapter is
    loaded over its base."""
    model_config = model_config or ModelConfig(model_name_or_path=str(ref.folder))
    processor = load_processor(ref.folder, ref.config)
    formulation = formulation_of(ref.config)
    if ref.adapter:
        from peft import PeftModel

        if not ref.base:
            raise CheckpointError(f"{ref.folder}: adapter checkpoint names no base model")
        base_model = _load_weights(resolve_checkpoint(ref.base), model_config)
        formulation.setup_base_for_adapter(base_model, processor.tokenizer, ref.config.prompts)
        try:
            with peft_wrapping():
                model = PeftModel.from_pretrained(base_model, str(ref.folder))
        except (OSError, ValueError, SafetensorError) as err:  # a missing or cut-short adapter file
            raise CheckpointError(f"{ref.name}: cannot load the LoRA adapter ({reason(err)})") from err
    else:
        model = _load_weights(ref.folder, model_config)
    formulation.load_own_files(model, ref.folder)
    model.eval()
    return model, processor


def load_checkpoint(
    path_or_hub_id: str | Path, model_config: ModelConfig | None = None, zero_shot: bool = False
):
    """An LL-Score checkpoint for scoring: (model, processor, LLScoreConfig) (`locate_checkpoint`, `load_model`)."""
    ref = locate_checkpoint(path_or_hub_id, zero_shot)
    model, processor = load_model(ref, model_config)
    return model, processor, ref.config


CHECKPOINT_MARKERS = (LLSCORE_CONFIG_NAME, "config.json", ADAPTER_CONFIG_NAME, *OWN_FILES)
"""Files whose presence says that a folder holds a checkpoint already."""
LAYOUT_FILES = (
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    ADAPTER_CONFIG_NAME,
    "adapter_model.safetensors",
    *OWN_FILES,
)
"""The files that make a checkpoint full or an adapter, with a formulation's own files or without: what an overwrite removes first,
since a save writes only those of its own layout and loaders would pick up the others."""


def save_checkpoint(
    model, processor, llscore_config: LLScoreConfig, out: str | Path, overwrite: bool = False
) -> Path:
    """Weights (safetensors) or adapter, processor and contract in one directory that `load_checkpoint` reads.

    A folder that holds a checkpoint already is refused: saving over it would leave the files of its layout
    (an adapter, the heads) beside this one's. `overwrite=True` replaces it, those files first."""
    out = Path(out)
    held = [name for name in CHECKPOINT_MARKERS if (out / name).exists()]
    if held and not overwrite:
        raise CheckpointError(
            f"{out}: holds a checkpoint already ({', '.join(held)}); save to a new folder, or pass "
            "overwrite=True to replace it"
        )
    if held:
        for pattern in LAYOUT_FILES:
            for stale in out.glob(pattern):
                stale.unlink()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    processor.save_pretrained(str(out))
    write_llscore_config(llscore_config, out)
    formulation = formulation_of(llscore_config)
    own_state = formulation.own_state(model)
    if own_state is not None:
        formulation.write_own_state(own_state, out)
    weights_like_other_files(out)
    return out
