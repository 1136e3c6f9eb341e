"""The head formulation, the LL-Bench paper's LL-Score (docs/training.md): the prompt holds two special tokens,
`<QUAL>` and `<HAL>`; a quality head and a hallucination head read the last layer's hidden states at those two
tokens. One forward pass answers both questions, and no answer word's logit is read.

The heads are a submodule of the transformers model (`llscore_heads`), so that the trainer, DeepSpeed and
`requires_grad_` see them as any other weights; they are saved apart from the model's weights, in
`llscore_heads.safetensors` beside them (no remote code), because `from_pretrained` knows nothing of them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from transformers.utils import ModelOutput

from llscore.errors import CheckpointError, reason
from llscore.families import family_of
from llscore.formulations.base import Formulation, with_known_labels
from llscore.losses import hallucination_bce, pair_ranking_bce, score_mse
from llscore.prompts import LLScoreConfig, PromptContract
from llscore.scoring import InputBuilder, QualityReading, joint_inputs

HEADS_FILE = "llscore_heads.safetensors"
HEADS_ATTRIBUTE = "llscore_heads"
MAX_HEAD_WIDTH = 1024


def _mlp(hidden_size: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden_size, width), nn.GELU(), nn.Linear(width, 1))


class ScoreHeads(nn.Module):
    """Two small MLPs (hidden → width → 1): the quality head's output s and the hallucination head's log-odds.
    They compute in their own dtype (float32 unless the model was cast), whatever the model's."""

    def __init__(self, hidden_size: int, width: int | None = None):
        super().__init__()
        width = width or min(hidden_size, MAX_HEAD_WIDTH)
        self.quality = _mlp(hidden_size, width)
        self.hallucination = _mlp(hidden_size, width)

    def forward(self, quality_state: torch.Tensor, hallucination_state: torch.Tensor):
        dtype = self.quality[0].weight.dtype
        quality = self.quality(quality_state.to(dtype)).squeeze(-1).float()
        hallucination = self.hallucination(hallucination_state.to(dtype)).squeeze(-1).float()
        return quality, hallucination


def heads_of(model) -> ScoreHeads:
    """The heads of a model (a peft or DeepSpeed wrapper allowed)."""
    base = getattr(model, "module", model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    heads = getattr(base, HEADS_ATTRIBUTE, None)
    if heads is None:
        raise CheckpointError("this model has no LL-Score heads; its checkpoint's formulation is 'levels'")
    return heads


def attach_heads(model, heads: ScoreHeads) -> None:
    """Register `heads` on the transformers model and keep them out of its own weight files (`HEADS_FILE`)."""
    model.add_module(HEADS_ATTRIBUTE, heads)
    ignored = set(model._keys_to_ignore_on_save or ())
    model._keys_to_ignore_on_save = ignored | {f"{HEADS_ATTRIBUTE}.{key}" for key in heads.state_dict()}


def head_token_ids(tokenizer, contract: PromptContract) -> tuple[int, int]:
    """The ids of `<QUAL>` and `<HAL>`; each must be one token of the tokenizer (it is added by `add_head_tokens`)."""
    ids = []
    for token in contract.head_tokens:
        pieces = tokenizer.encode(token, add_special_tokens=False)
        if len(pieces) != 1:
            raise CheckpointError(
                f"head token {token!r} is not one token in this tokenizer (it splits into {len(pieces)}); a head "
                "checkpoint saves its tokenizer with the token added"
            )
        ids.append(pieces[0])
    return ids[0], ids[1]


def add_head_tokens(model, tokenizer, contract: PromptContract) -> tuple[int, int]:
    """`<QUAL>` / `<HAL>` added to the tokenizer as special tokens, the embeddings grown when the tokenizer
    outgrows them, and each new token's embedding row set to the mean row (a neutral start, trained after)."""
    new = [token for token in contract.head_tokens if token not in tokenizer.get_vocab()]
    tokenizer.add_tokens(new, special_tokens=True)
    embeddings = model.get_input_embeddings()
    if len(tokenizer) > embeddings.num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        embeddings = model.get_input_embeddings()
    ids = head_token_ids(tokenizer, contract)
    if new:
        weight = embeddings.weight
        gathered = contextlib.nullcontext()
        if hasattr(weight, "ds_id"):  # loaded under DeepSpeed ZeRO-3: partitioned until gathered
            import deepspeed

            gathered = deepspeed.zero.GatheredParameters([weight], modifier_rank=0)
        with gathered, torch.no_grad():
            mean = weight[: min(ids)].mean(dim=0)
            for token_id in ids:
                weight[token_id] = mean
    return ids


def hidden_size_of(model) -> int:
    """The width of the language model's hidden states (what the heads read)."""
    return model.config.get_text_config().hidden_size


def new_heads(model) -> ScoreHeads:
    """Freshly initialised heads for `model`, on its device, drawn from torch's global RNG (train.py seeds it
    with the recipe's `seed` before loading)."""
    return ScoreHeads(hidden_size_of(model)).to(next(model.parameters()).device)


def heads_state(model) -> dict[str, torch.Tensor]:
    """The heads' weights on the CPU, gathered whole under DeepSpeed ZeRO-3 (every process must call it then)."""
    heads = heads_of(model)
    gathered = contextlib.nullcontext()
    if any(hasattr(p, "ds_id") for p in heads.parameters()):
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(list(heads.parameters()), modifier_rank=None)
    with gathered:
        return {key: value.detach().cpu().contiguous() for key, value in heads.state_dict().items()}


def write_heads(state: dict[str, torch.Tensor], out: str | Path) -> None:
    save_file(state, str(Path(out) / HEADS_FILE), metadata={"format": "pt"})


def read_heads(folder: str | Path) -> ScoreHeads:
    """The heads saved in `folder` (their width read from the file); a missing or broken file is one
    `CheckpointError`."""
    file = Path(folder) / HEADS_FILE
    if not file.is_file():
        raise CheckpointError(
            f"{folder}: no {HEADS_FILE}; its {HEADS_FILE} is what a 'heads' checkpoint reads"
        )
    try:
        with safe_open(str(file), framework="pt") as saved:
            state = {key: saved.get_tensor(key) for key in saved.keys()}  # noqa: SIM118 (safe_open is no dict)
        width, hidden_size = state["quality.0.weight"].shape
        with torch.device("meta"):  # no random initialisation to overwrite: loading draws no random numbers
            heads = ScoreHeads(hidden_size, width)
        heads.load_state_dict(state, assign=True)
    except (SafetensorError, OSError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"{file}: not LL-Score heads ({reason(err)})") from err
    return heads


def load_heads(model, folder: str | Path) -> ScoreHeads:
    """Attach the heads saved in `folder` to `model`; heads for another hidden size are one `CheckpointError`."""
    heads = read_heads(folder)
    hidden_size = heads.quality[0].in_features
    if hidden_size != hidden_size_of(model):
        raise CheckpointError(
            f"{Path(folder) / HEADS_FILE}: heads for hidden size {hidden_size}, the model's is {hidden_size_of(model)}"
        )
    attach_heads(model, heads.to(next(model.parameters()).device))
    return heads


READ_HEADS = "read_llscore_heads"
"""The keyword that asks a model with heads for the heads' outputs (`head_outputs`)."""
READING = "_llscore_reading_heads"


@dataclass
class HeadOutput(ModelOutput):
    """What a forward asked for the heads returns: the quality head's s and the hallucination head's log-odds."""

    quality: torch.Tensor | None = None
    hallucination: torch.Tensor | None = None


def enable_head_outputs(model, token_ids: tuple[int, int]) -> None:
    """Make the heads part of `model`'s own forward: called with `read_llscore_heads=True`, it returns a
    `HeadOutput` read at each item's `<QUAL>` / `<HAL>`. Hooks on the outermost model (a peft wrapper included),
    so that DistributedDataParallel and DeepSpeed see the heads inside the forward they wrap: DDP's search for
    unused parameters would otherwise count them unused, then see their gradients arrive. The hidden states are
    the language model's `last_hidden_state` (after its final norm: what the LM head reads), taken from its
    output rather than from `output_hidden_states`, which would keep every layer's."""
    if hasattr(model, READING):
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    language_model = base.get_submodule(family_of(base.config).language_model)
    last_hidden = {}

    def keep(module, args, kwargs, output):
        if getattr(model, READING):
            last_hidden["states"] = output.last_hidden_state

    def ask(module, args, kwargs):
        setattr(module, READING, bool(kwargs.pop(READ_HEADS, False)))
        last_hidden.clear()
        if getattr(module, READING):
            kwargs.update(logits_to_keep=1, use_cache=False)
        return args, kwargs

    def read(module, args, kwargs, output):
        if not getattr(module, READING):
            return output
        setattr(module, READING, False)
        hidden = last_hidden.pop("states")
        input_ids = kwargs["input_ids"]
        states = []
        for token_id in token_ids:
            where = input_ids == token_id
            if not bool((where.sum(dim=1) == 1).all()):
                raise ValueError(
                    f"every item must hold token id {token_id} once (the contract's head tokens)"
                )
            states.append(hidden[where])
        return HeadOutput(*heads_of(module)(*states))

    setattr(model, READING, False)
    language_model.register_forward_hook(keep, with_kwargs=True)
    model.register_forward_pre_hook(ask, with_kwargs=True)
    model.register_forward_hook(read, with_kwargs=True)


def head_outputs(model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass: the quality head's s and the hallucination head's log-odds for each item
    (`enable_head_outputs`); each distinct image of the batch encoded once (`joint_inputs`)."""
    output = model(**joint_inputs(model, [inputs]), **{READ_HEADS: True})
    if not isinstance(output, HeadOutput):
        raise CheckpointError(
            "this model does not run its heads in its forward (llscore.formulations.heads.enable_head_outputs)"
        )
    return output.quality, output.hallucination


def quality_from_head(s: torch.Tensor, contract: PromptContract) -> QualityReading:
    """The quality head's s on the contract's score scale: low + (high − low)·σ(s), the level formulation's [1, 5]
    (docs/training.md), so that eval, reward and leaderboards read one scale. No level distribution: std and
    distribution are None, and pairs compare as σ(s_A − s_B)."""
    low, high = contract.score_range
    return QualityReading(
        level_logits=None, distribution=None, score=low + (high - low) * torch.sigmoid(s), std=None, logit=s
    )


@dataclass(frozen=True)
class JointInputs:
    """The head backend's `prepare`: one "joint" input per batch, whatever tasks are asked (both are read from
    its one forward pass). Model-free, so that a DataLoader's worker processes run it."""

    builder: InputBuilder

    def __call__(self, restored: list, degraded: list | None, tasks) -> dict:
        return {"joint": self.builder("joint", restored, degraded), "tasks": tuple(tasks)}


class HeadBackend:
    """The head formulation behind the scoring seam (`llscore.scoring.ScoringBackend`)."""

    def __init__(self, model, processor, config: LLScoreConfig):
        self.model, self.processor = model, processor
        self.config = config
        self.prepare = JointInputs(InputBuilder(processor, config))
        enable_head_outputs(model, head_token_ids(processor.tokenizer, config.prompts))
        heads_of(model)  # a model without heads fails here, not at its first batch

    def read(self, inputs: dict) -> tuple[QualityReading, torch.Tensor | None]:
        device = next(self.model.parameters()).device
        s, hallucination_logit = head_outputs(self.model, inputs["joint"].to(device))
        p_hallucination = torch.sigmoid(hallucination_logit) if "hallucination" in inputs["tasks"] else None
        return quality_from_head(s, self.config.prompts), p_hallucination


class HeadObjective:
    """The rank-aware joint objective (docs/training.md): Bradley–Terry on s_A − s_B against the humans'
    P(A better), the score against the human mean, BCE on the hallucination head; one forward pass."""

    def __init__(self, config: LLScoreConfig, args):
        self.contract = config.prompts
        self.level_weights = torch.tensor(config.prompts.level_weights, dtype=torch.float32)
        self.score = bool(args.score_mse)
        self.hallucination = bool(args.hallucination_bce)

    def __call__(self, model, inputs) -> dict[str, torch.Tensor]:
        s, hallucination_log_odds = head_outputs(model, inputs["joint_inputs"])
        n_pairs = inputs["p_human"].shape[0]
        terms = {"pair_ranking": pair_ranking_bce(s[:n_pairs] - s[n_pairs:], inputs["p_human"])}
        if self.score:
            human = inputs["soft_target"] @ self.level_weights.to(s.device)
            terms["score_mse"] = score_mse(
                quality_from_head(s, self.contract).score, human, self.contract.score_range
            )
        if self.hallucination:
            label = inputs["hallucination_label"]
            known = with_known_labels(label)
            terms["hallucination_bce"] = hallucination_bce(hallucination_log_odds[known], label[known])
        return terms


class Heads(Formulation):
    name = "heads"
    loss_terms = ("pair_ranking", "score_mse", "hallucination_bce")
    files = (HEADS_FILE,)
    card_tags = ("llscore-heads",)
    card_fields: ClassVar[dict] = {
        "heads": True
    }  # the card's head sections: the tokens, the heads' file, reading them

    def questions(self, with_hallucination: bool) -> tuple[str, ...]:
        return ("joint",)

    def setup_for_training(self, model, tokenizer, contract: PromptContract, start: Path) -> tuple[int, ...]:
        token_ids = add_head_tokens(model, tokenizer, contract)
        if (start / HEADS_FILE).is_file():  # training on from an earlier head checkpoint keeps its heads
            load_heads(model, start)
        else:
            attach_heads(model, new_heads(model))
        output = model.get_output_embeddings()
        if output is not None and output.weight is not model.get_input_embeddings().weight:
            output.requires_grad_(False)  # the heads read hidden states: an untied LM head gets no gradient
        return token_ids

    def after_wrapping(self, model) -> None:
        heads_of(model).requires_grad_(
            True
        )  # peft freezes all it does not wrap; the heads are new and train whole

    def setup_base_for_adapter(self, base_model, tokenizer, contract: PromptContract) -> None:
        add_head_tokens(base_model, tokenizer, contract)  # the adapter's trained token rows need room

    def load_own_files(self, model, folder: Path) -> None:
        load_heads(model.get_base_model() if hasattr(model, "get_base_model") else model, folder)

    def own_state(self, model) -> dict[str, torch.Tensor]:
        return heads_state(model)

    def write_own_state(self, state: dict[str, torch.Tensor], folder: Path) -> None:
        write_heads(state, folder)

    def reload_in_place(self, model, folder: Path) -> None:
        heads_of(model).load_state_dict(read_heads(folder).state_dict())

    def is_own_parameter(self, name: str) -> bool:
        return f"{HEADS_ATTRIBUTE}." in name

    def setup_trainer_model(self, model, tokenizer, config: LLScoreConfig, args) -> None:
        enable_head_outputs(model, head_token_ids(tokenizer, config.prompts))
        if not args.hallucination_bce:  # untrained by any term: DDP would wait for its gradients
            heads_of(model).hallucination.requires_grad_(False)

    def objective(self, tokenizer, config: LLScoreConfig, args) -> HeadObjective:
        return HeadObjective(config, args)

    def backend(self, model, processor, config: LLScoreConfig) -> HeadBackend:
        return HeadBackend(model, processor, config)
