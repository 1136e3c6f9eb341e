"""Images -> model inputs, and what a model's outputs mean: the quality reading, P(hallucination), P(A better).

This module turns images into model inputs (`InputBuilder`) and holds the readings both formulations share;
each formulation (llscore/formulations/) reads its answers with these functions, for its training loss and its
scoring backend alike, and the in-training validation, `eval.py`, the public `LLScore` API and the reward all
score through that backend, so a score reported anywhere is computed exactly as training optimised it. No
`generate()`: the prompt ends with the answer stem (or the head tokens) in an open assistant turn, inputs are
left-padded, and the last position is read.
"""

from __future__ import annotations

import inspect
import json
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from accelerate.utils import extract_model_from_parallel
from PIL import Image
from transformers import BatchFeature

from llscore.errors import ImageError
from llscore.families import family_of_processor
from llscore.images import read_image, to_rgb
from llscore.prompts import LLScoreConfig, PromptContract

ImageLike = str | Path | Image.Image | torch.Tensor
"""A file path, a PIL image, or a (3, H, W) float tensor in [0, 1] (differentiable: see `InputBuilder`)."""
TASKS = ("quality", "hallucination")
QUESTIONS = (*TASKS, "joint")
"""What an input can ask: one task, or both at once (the head formulation's "joint" question, llscore/formulations/heads.py)."""


def image_name(image: ImageLike) -> str:
    """How an error names an image: its path, or what it is."""
    if isinstance(image, torch.Tensor):
        return "a tensor image"
    return "a PIL image" if isinstance(image, Image.Image) else str(image)


def load_image(image: ImageLike) -> Image.Image | torch.Tensor:
    """An 8-bit RGB PIL image from a path or a PIL image (`llscore.images`: 16-bit, alpha, palette and EXIF
    orientation handled; an error names the file). A tensor passes through (checked): `InputBuilder` keeps it
    inside autograd."""
    if not isinstance(image, torch.Tensor):
        return to_rgb(image) if isinstance(image, Image.Image) else read_image(image)
    if image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
        raise ImageError(
            f"a tensor image must be float (3, H, W) in [0, 1], got {image.dtype} {tuple(image.shape)}"
        )
    if image.numel() == 0:
        raise ImageError(f"a tensor image has no pixels (shape {tuple(image.shape)})")
    low, high = image.detach().aminmax()
    if not (low >= 0 and high <= 1):  # written so that NaN (every comparison false) is refused too
        raise ImageError(f"a tensor image must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]")
    return image


def _identity(image: ImageLike):
    """What makes two images of a batch one: the same path, or the same object."""
    return str(image) if isinstance(image, str | Path) else id(image)


class InputBuilder:
    """Chat prompt + images -> processor tensors, under the checkpoint's prompt contract and resolution rule.

    Picklable and model-free, so the training collator runs it in data-loader workers. Images given as tensors
    go through the same processor with gradients kept (see `pixel_tensors`).
    """

    def __init__(self, processor, config: LLScoreConfig):
        self.processor = processor
        self.config = config
        self.family = family_of_processor(processor)
        self._rendered: dict[str, str] = {}  # the chat template's prompt of each message list (`texts`)

    def load(self, image: ImageLike) -> Image.Image | torch.Tensor:
        """`load_image`, and the family's aspect limit, the error naming the image."""
        decoded = load_image(image)
        height, width = decoded.shape[1:] if isinstance(decoded, torch.Tensor) else decoded.size[::-1]
        self.family.check_aspect(width, height, image_name(image))
        return decoded

    def texts(self, task: str, with_degraded: Sequence[bool], rng: random.Random | None = None) -> list[str]:
        """The chat-templated prompt of each item; a prompt's template is rendered once and kept (a contract has a
        few questions and paraphrases; rendering each item anew took 10 ms of a 0.3 s training step)."""
        texts = []
        for has_degraded in with_degraded:
            messages = self.config.prompts.messages(task, has_degraded, rng)
            key = json.dumps(messages)
            if key not in self._rendered:
                self._rendered[key] = self.processor.apply_chat_template(
                    messages, tokenize=False, continue_final_message=True
                )
            texts.append(self._rendered[key])
        return texts

    def pixel_tensors(self, images: list[list]) -> list[list[torch.Tensor]]:
        """Every image as float32 (3, H, W) on the 0-255 scale, already at the size the processor resizes to.

        Used when any image of a batch is a tensor. The resize is the image processor's own (torch ops, so
        `pixel_values` stays differentiable), done here so that its result can be clamped to [0, 255] as the
        processor's 8-bit path is: a reward must not be optimised on ringing that no saved image can hold.
        """
        processor = self.processor.image_processor
        device = next(image.device for item in images for image in item if isinstance(image, torch.Tensor))

        def resized(image) -> torch.Tensor:
            if isinstance(image, torch.Tensor):
                pixels = image.to(device, torch.float32) * 255
            else:
                pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).to(device, torch.float32)
            return self.family.resize(processor, pixels[None], self.config.resolution)[0]

        return [[resized(image) for image in item] for item in images]

    def __call__(
        self,
        task: str,
        restored: Sequence[ImageLike],
        degraded: Sequence[ImageLike | None] | None = None,
        rng: random.Random | None = None,
    ):
        """The processor's inputs of one question (`task`) about each restoration."""
        return self.ask({task: rng}, restored, degraded)[task]

    def ask(
        self,
        questions: Mapping[str, random.Random | None],
        restored: Sequence[ImageLike],
        degraded: Sequence[ImageLike | None] | None = None,
    ) -> dict:
        """The processor's inputs of several questions about the same images ({task: the RNG that picks its
        paraphrases, or None}), each distinct image decoded and processed once.

        A training batch asks two questions and shows a pair's degraded input beside both restorations: the image
        processor sees each distinct image (the same object, or the same path) once, and each question's text
        is expanded and tokenized by the processor's own pieces (`replace_image_token`,
        `get_text_with_replacements`, its tokenizer), so the inputs equal `processor(text=..., images=...)`
        (tests/test_scoring.py checks it on every family). Tensor images take the processor's call itself.
        """
        for task in questions:
            if task not in QUESTIONS:
                raise ValueError(f"task must be one of {QUESTIONS}, got {task!r}")
        degraded = [None] * len(restored) if degraded is None else list(degraded)
        if len(degraded) != len(restored):
            raise ValueError(f"{len(restored)} restored images but {len(degraded)} degraded inputs")
        with_degraded = [d is not None for d in degraded]
        shown = [[r] if d is None else [d, r] for r, d in zip(restored, degraded, strict=True)]
        slot_of: dict = {}  # an image's slot among the distinct ones, by its path or the object itself
        distinct = []
        for image in (image for item in shown for image in item):
            if _identity(image) not in slot_of:
                slot_of[_identity(image)] = len(distinct)
                distinct.append(self.load(image))
        order = [slot_of[_identity(image)] for item in shown for image in item]
        size = {"size": self.family.image_size(self.config.resolution)}
        if any(isinstance(image, torch.Tensor) for image in distinct):
            images = self.pixel_tensors([[distinct[slot_of[_identity(i)]] for i in item] for item in shown])
            return {
                task: self.processor(
                    text=self.texts(task, with_degraded, rng),
                    images=images,
                    padding=True,
                    padding_side="left",
                    return_tensors="pt",
                    images_kwargs=size,
                )
                for task, rng in questions.items()
            }
        processed = self.processor.image_processor(distinct, return_tensors="pt", **size)
        grids = processed["image_grid_thw"]
        pixels = processed["pixel_values"].split(grids.prod(-1).tolist())
        expansions = [
            self.processor.replace_image_token(processed, image_idx=i) for i in range(len(distinct))
        ]
        pixel_values = torch.cat([pixels[i] for i in order])
        texts = [
            text
            for task, rng in questions.items()
            for text in self.processor.get_text_with_replacements(
                self.texts(task, with_degraded, rng), [expansions[i] for i in order]
            )[0]
        ]  # tokenized together: the questions have one length, so that one forward pass asks them all
        tokens = self.processor.tokenizer(texts, padding=True, padding_side="left", return_tensors="pt")
        tokens["mm_token_type_ids"] = self.processor.create_mm_token_type_ids(tokens["input_ids"])
        items = len(shown)
        return {
            task: BatchFeature(
                {
                    **{key: value[k * items : (k + 1) * items] for key, value in tokens.items()},
                    "pixel_values": pixel_values,
                    "image_grid_thw": grids[order],
                },
                tensor_type="pt",
            )
            for k, task in enumerate(questions)
        }


def joint_inputs(model, questions: Sequence[Mapping[str, torch.Tensor]]) -> dict:
    """Several questions about the same images (`InputBuilder.ask`) as one batch for one forward pass, each
    distinct image encoded by the vision tower once.

    A training step asks two questions and shows a pair's degraded input beside both of its restorations, so
    asked apart its tower encodes each image about 2.7 times, and the tower is the costliest forward of a small
    model (docs/training.md, "Where a step goes"). Each distinct image (by its exact pixels) is encoded once and
    every question reads its features through the forward's `mm_encoder_outputs`, so the numbers are those of
    separate forwards and the gradients of every use add up. Pixels that carry gradients (the reward's images,
    which may be distinct tensors with equal values) and a model whose forward takes no precomputed features are
    batched as they are."""
    lengths = {question["input_ids"].shape[1] for question in questions}
    if len(lengths) != 1:
        raise ValueError(
            f"questions asked in one pass must be tokenized together (InputBuilder.ask): {lengths}"
        )
    joint = {
        key: torch.cat([question[key] for question in questions])
        for key in questions[0]
        if key not in ("pixel_values", "mm_encoder_outputs")
    }
    base = extract_model_from_parallel(model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    if "mm_encoder_outputs" not in inspect.signature(base.forward).parameters or any(
        "pixel_values" not in q or q["pixel_values"].requires_grad for q in questions
    ):
        if "pixel_values" in questions[0]:
            joint["pixel_values"] = torch.cat([question["pixel_values"] for question in questions])
        return joint
    distinct, grids, slots = [], [], []
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for question in questions:
        grid_rows = question["image_grid_thw"].cpu()
        sizes = grid_rows.prod(-1).tolist()
        fingerprints = question["pixel_values"].float().sum(-1).cpu().split(sizes)  # equal images, equal sums
        for pixels, grid, fingerprint in zip(
            question["pixel_values"].split(sizes), grid_rows, fingerprints, strict=True
        ):
            key = grid.numpy().tobytes() + fingerprint.numpy().tobytes()
            slot = next((i for i in by_key[key] if torch.equal(distinct[i], pixels)), None)
            if slot is None:
                slot = len(distinct)
                by_key[key].append(slot)
                distinct.append(pixels)
                grids.append(grid)
            slots.append(slot)
    device = joint["image_grid_thw"].device
    encoded = base.get_image_features(torch.cat(distinct), torch.stack(grids).to(device), return_dict=True)
    picked = {"pooler_output": tuple(encoded.pooler_output[i] for i in slots)}
    if getattr(encoded, "deepstack_features", None) is not None:  # Qwen3-VL's features for early LLM layers
        picked["deepstack_features"] = [
            tuple(layer[i] for i in slots) for layer in encoded.deepstack_features
        ]
    joint["mm_encoder_outputs"] = {"image": type(encoded)(**picked)}
    return joint


def answers(model, questions: Sequence[Mapping[str, torch.Tensor]]) -> list[torch.Tensor]:
    """Each question's next-token logits after the answer stem, from one forward pass (`joint_inputs`)."""
    sizes = [question["input_ids"].shape[0] for question in questions]
    return list(answer_logits(model, joint_inputs(model, questions)).split(sizes))


def answer_logits(model, inputs) -> torch.Tensor:
    """Next-token logits after the answer stem, shape (batch, vocab); only the last position is computed."""
    output = model(**inputs, logits_to_keep=1, use_cache=False)
    return output.logits[:, -1, :].float()


@dataclass
class QualityReading:
    """The model's quality answer, as tensors (differentiable when the model's outputs are): the score on the
    contract's scale, and either the level words' distribution and its std (the level formulation) or the quality
    head's raw output `logit` (the head formulation, llscore/formulations/heads.py)."""

    level_logits: torch.Tensor | None
    distribution: torch.Tensor | None
    score: torch.Tensor
    std: torch.Tensor | None
    logit: torch.Tensor | None = None


def read_quality(logits: torch.Tensor, level_ids: Sequence[int], weights: torch.Tensor) -> QualityReading:
    """Softmax over the level words only; score = expected level weight, std = its spread."""
    level_logits = logits[:, list(level_ids)]
    distribution = level_logits.softmax(dim=-1)
    weights = weights.to(distribution)
    score = distribution @ weights
    variance = distribution @ weights.square() - score.square()
    return QualityReading(level_logits, distribution, score, variance.clamp_min(0).sqrt())


def hallucination_logit(logits: torch.Tensor, yes_no_ids: Sequence[int]) -> torch.Tensor:
    """logit(" Yes") − logit(" No"): the log-odds of hallucination (what the training BCE takes)."""
    yes, no = yes_no_ids
    return logits[:, yes] - logits[:, no]


def read_hallucination(logits: torch.Tensor, yes_no_ids: Sequence[int]) -> torch.Tensor:
    """P(" Yes") from the softmax over the two answer words, i.e. the sigmoid of `hallucination_logit`."""
    return torch.sigmoid(hallucination_logit(logits, yes_no_ids))


def thurstone_probability(mu_a, std_a, mu_b, std_b, eps: float = 1e-6):
    """P(A better than B) under Thurstone's case V with each item's own spread: Φ((μA−μB)/√(σA²+σB²))."""
    scale = (std_a.square() + std_b.square() + eps).sqrt()
    return 0.5 * (1 + torch.erf((mu_a - mu_b) / (scale * 2**0.5)))


def pair_probability(a: QualityReading, b: QualityReading) -> torch.Tensor:
    """P(A better than B): Thurstone on the two level distributions, or Bradley–Terry σ(s_A − s_B) on the quality
    head's outputs (what each formulation's pair loss trains, docs/training.md)."""
    if a.std is None or b.std is None:
        return torch.sigmoid(a.logit - b.logit)
    return thurstone_probability(a.score, a.std, b.score, b.std)


def check_answer_words(tokenizer, contract: PromptContract) -> dict[str, int]:
    """Map each answer word to its single token id; a word that splits cannot be scored in one pass."""
    ids = {}
    for word in contract.answer_words:
        pieces = tokenizer.encode(word, add_special_tokens=False)
        if len(pieces) != 1:
            tokens = tokenizer.convert_ids_to_tokens(pieces)
            raise ValueError(
                f"answer word {word!r} is not one token in this tokenizer: it splits into {tokens} "
                f"(ids {pieces}); LL-Score reads one logit per answer word, so choose words that are single tokens"
            )
        ids[word] = pieces[0]
    if len(set(ids.values())) != len(ids):
        raise ValueError(f"answer words {list(ids)} do not map to distinct tokens ({list(ids.values())})")
    return ids


class ScoringBackend(Protocol):
    """What turns images into LL-Score's two readings; `LLScore` (and through it eval.py, in-training validation,
    the CLI and the reward) batches, shares out and collects, and the backend does the rest (docs/architecture.md).
    Another runtime (vLLM) is a class with these two methods and a builder registered in `llscore.backends`;
    another question (A versus B given the input) needs more than this seam: `read` sees one image at a time.

    `prepare` is the CPU side, run in a DataLoader's worker processes: images as the caller gave them (paths, PIL
    images or tensors; `load_image` decodes them, `InputBuilder.load` adds the family's checks) to the inputs of
    each task asked. It must not hold the model (a worker started by spawn gets a pickled copy).
    `read` is the model side: those inputs to the quality reading and P(hallucination) (None when not asked),
    differentiable when the backend is."""

    def prepare(self, restored: list, degraded: list | None, tasks: Sequence[str]) -> dict: ...

    def read(self, inputs: dict) -> tuple[QualityReading, torch.Tensor | None]: ...
