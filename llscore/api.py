"""`LLScore`: the public, two-line API over `llscore.scoring` (load a checkpoint, score restored images)."""

from __future__ import annotations

import numbers
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from llscore.errors import LLScoreError
from llscore.formulations import formulation_of
from llscore.modeling import locate_checkpoint, save_checkpoint
from llscore.prompts import LLScoreConfig
from llscore.runtime import DEFAULT_BACKEND, RuntimeOptions
from llscore.scoring import (
    TASKS,
    ImageLike,
    QualityReading,
    ScoringBackend,
    pair_probability,
)


def _single(images) -> bool:
    """One image rather than a sequence of them (a 4-D tensor is a batch)."""
    return isinstance(images, str | Path | Image.Image) or (
        isinstance(images, torch.Tensor) and images.ndim == 3
    )


IMAGE_KINDS = "a path, a PIL image or a (3, H, W) float tensor in [0, 1]"


def _image_list(images, argument: str) -> list:
    """`images` (one image or a sequence of them) as a list; refuses an empty batch, anything not an image and a
    tensor with a non-finite pixel, naming `argument` and the index, before any batch is prepared."""
    if not _single(images) and not isinstance(images, Iterable):
        raise TypeError(
            f"{argument} is a {type(images).__name__}; pass an image or a sequence of images ({IMAGE_KINDS})"
        )
    items = [images] if _single(images) else list(images)
    if not items:
        raise ValueError(f"{argument} is empty; pass at least one image ({IMAGE_KINDS})")
    for i, item in enumerate(items):
        if not isinstance(item, str | os.PathLike | Image.Image | torch.Tensor):
            raise TypeError(f"{argument}[{i}] is a {type(item).__name__}; an image is {IMAGE_KINDS}")
        if isinstance(item, torch.Tensor) and not torch.isfinite(item.detach()).all():
            # a NaN pixel would pass a [0, 1] check made of comparisons, and make every score and reward NaN
            raise ValueError(
                f"{argument}[{i}] has non-finite pixel values (NaN or inf); pixels must lie in [0, 1]"
            )
    return items


def _image_lists(restored, degraded) -> tuple[list, list | None]:
    """`_image_list` of both arguments, one degraded input per restored image (or none at all)."""
    restored = _image_list(restored, "restored")
    if degraded is None:
        return restored, None
    degraded = _image_list(degraded, "degraded")
    if len(degraded) != len(restored):
        raise ValueError(f"{len(restored)} restored images but {len(degraded)} degraded inputs")
    return restored, degraded


class _Batches:
    """A DataLoader's `collate_fn`: a batch of indices to the backend's inputs, the images decoded and
    preprocessed by the backend's model-free `prepare` where the DataLoader runs it (a worker process, or this
    one). It holds the image list and `prepare`, nothing of the model."""

    def __init__(self, prepare, restored: list, degraded: list | None, tasks: tuple[str, ...]):
        self.prepare, self.restored, self.degraded, self.tasks = prepare, restored, degraded, tasks

    def inputs(self, indices: Iterable[int]) -> dict:
        restored = [self.restored[i] for i in indices]
        degraded = None if self.degraded is None else [self.degraded[i] for i in indices]
        return self.prepare(restored, degraded, self.tasks)

    def __call__(self, indices: list[int]) -> dict | LLScoreError:
        """The batch's inputs, or the input's own error (a missing or unreadable image) returned to be raised in
        the scoring process as it is: the DataLoader would re-raise it as a worker's traceback."""
        with torch.no_grad():  # scoring: no graph for tensor images, in a worker or not
            try:
                return self.inputs(indices)
            except LLScoreError as err:
                return err


def _tasks(hallucination: bool) -> tuple[str, ...]:
    return TASKS if hallucination else ("quality",)


def _for_workers(images: list) -> list:
    """Images as worker processes can take them: a PIL image still reading its file is read here (a forked
    worker would share, and move, its file offset), and tensors leave autograd (spawn cannot pickle a
    non-leaf tensor; scoring needs no graph)."""
    for image in images:
        if isinstance(image, Image.Image) and getattr(image, "fp", None) is not None:
            image.load()
    return [image.detach() if isinstance(image, torch.Tensor) else image for image in images]


def _on_a_device(images: list) -> bool:
    """Tensors on a GPU cannot go to a DataLoader's forked worker processes (CUDA does not survive a fork)."""
    return any(isinstance(image, torch.Tensor) and image.device.type != "cpu" for image in images)


def _names(images: Sequence[ImageLike]) -> list[str]:
    return [str(image) if isinstance(image, str | Path) else f"image_{i}" for i, image in enumerate(images)]


@dataclass
class ScoreResults:
    """Per-image results: quality score in [1, 5] and P(hallucination); the level distribution and its std from a
    level checkpoint, the quality head's raw output (`quality_logit`) from a head checkpoint (None otherwise)."""

    names: list[str]
    score: np.ndarray
    std: np.ndarray | None
    distribution: np.ndarray | None
    p_hallucination: np.ndarray | None
    level_words: tuple[str, ...]
    quality_logit: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    def reading(self) -> QualityReading:
        """The quality reading as tensors (what `pair_probability` compares)."""

        def tensor(values):
            return None if values is None else torch.from_numpy(np.asarray(values))

        return QualityReading(
            None, tensor(self.distribution), tensor(self.score), tensor(self.std), tensor(self.quality_logit)
        )

    def to_records(self) -> list[dict]:
        records = []
        for i, name in enumerate(self.names):
            record = {"image": name, "score": float(self.score[i])}
            if self.std is not None:
                record["std"] = float(self.std[i])
                record.update(
                    {
                        f"p_{w.strip()}": float(p)
                        for w, p in zip(self.level_words, self.distribution[i], strict=True)
                    }
                )
            if self.quality_logit is not None:
                record["quality_logit"] = float(self.quality_logit[i])
            if self.p_hallucination is not None:
                record["p_hallucination"] = float(self.p_hallucination[i])
            records.append(record)
        return records

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame.from_records(self.to_records())


@dataclass
class CompareResults:
    """P(A better than B) per pair, with both sides' scores."""

    p_a_better: np.ndarray
    a: ScoreResults
    b: ScoreResults

    def to_records(self) -> list[dict]:
        return [
            {
                "image_a": ra["image"],
                "image_b": rb["image"],
                "score_a": ra["score"],
                "score_b": rb["score"],
                "p_a_better": float(p),
            }
            for ra, rb, p in zip(self.a.to_records(), self.b.to_records(), self.p_a_better, strict=True)
        ]


def backend_for(model, processor, config: LLScoreConfig) -> ScoringBackend:
    """The backend a checkpoint's contract names (`LLScoreConfig.formulation`, docs/training.md)."""
    return formulation_of(config).backend(model, processor, config)


READING_FIELDS = ("score", "std", "distribution", "logit")
"""The `QualityReading` fields that `score` collects (None when the backend does not give them)."""
SHARED_FIELDS = ("score", "std", "distribution", "p_hallucination", "quality_logit")
"""The per-image `ScoreResults` fields that `score_across_processes` gathers."""


class LLScore:
    """A trained LL-Score evaluator.

    >>> metric = LLScore.from_pretrained("checkpoints/llscore-tiny")
    >>> metric.score(["restored.png"], degraded=["input.png"]).score
    """

    def __init__(self, model, processor, config: LLScoreConfig, backend: ScoringBackend | None = None):
        """`backend` defaults to the transformers model and processor read the contract's formulation's way
        (`backend_for`); a backend of another runtime (llscore/backends.py) comes with `model` and `processor`
        None, and then only `save_pretrained`, `device` and the differentiable reward need them."""
        self.model = model
        self.processor = processor
        self.config = config
        self.backend = backend or backend_for(model, processor, config)

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path,
        dtype: str = "float32",
        device: str | torch.device | None = None,
        attn_implementation: str = "sdpa",
        quantization: str | None = None,
        zero_shot: bool = False,
        backend: str = DEFAULT_BACKEND,
    ) -> LLScore:
        """Load an LL-Score checkpoint (a local directory or a Hub id) into the backend named `backend`
        (`llscore.backends.BACKENDS`; `transformers` takes `attn_implementation` and `quantization`).

        `zero_shot=True` also loads a base model that has no `llscore_config.json` and scores it with the
        default prompt contract and resolution rule, with a `ZeroShotWarning`; a checkpoint that has an
        `llscore_config.json` loads normally (its own contract) whether or not the flag is set.
        """
        from llscore.backends import build_backend, check_backend  # imports the formulations' backends

        options = RuntimeOptions(check_backend(backend), dtype, None if device is None else str(device))
        ref = locate_checkpoint(path_or_hub_id, zero_shot)  # a Hub id downloads: after the name is known good
        built = build_backend(
            ref, options, attn_implementation=attn_implementation, quantization=quantization
        )
        return cls(getattr(built, "model", None), getattr(built, "processor", None), ref.config, built)

    def save_pretrained(self, out: str | Path, overwrite: bool = False) -> Path:
        """Save as a checkpoint that `from_pretrained` loads; a folder holding a checkpoint already is refused
        unless `overwrite` (`llscore.modeling.save_checkpoint`)."""
        return save_checkpoint(self.model, self.processor, self.config, out, overwrite=overwrite)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (a transformers model)."""
        return next(self.model.parameters()).device

    def read(
        self, restored: Sequence[ImageLike], degraded=None, hallucination: bool = True
    ) -> tuple[QualityReading, torch.Tensor | None]:
        """Both answers for one batch, gradients allowed: the quality reading and P(hallucination) (or None)."""
        restored, degraded = _image_lists(restored, degraded)
        return self.backend.read(self._inputs(restored, degraded, hallucination))

    def _inputs(self, restored: Sequence[ImageLike], degraded, hallucination: bool) -> dict:
        """The model inputs of one batch for each question, gradients kept for tensor images (`read`)."""
        batches = _Batches(self.backend.prepare, restored, degraded, _tasks(hallucination))
        return batches.inputs(range(len(restored)))

    @torch.no_grad()  # not inference_mode: the image processor caches tensors a later differentiable call reuses
    def score(
        self,
        restored: ImageLike | Sequence[ImageLike],
        degraded: ImageLike | Sequence[ImageLike] | None = None,
        batch_size: int = 8,
        hallucination: bool = True,
        progress: bool = False,
        workers: int = 0,
    ) -> ScoreResults:
        """Score restored images (paths, PIL images or (3, H, W) tensors in [0, 1]), each given its degraded
        input when known.

        The batches come from a `torch.utils.data.DataLoader`: with `workers` > 0, that many worker processes
        decode and preprocess the next batches while the model runs the current one (0: all in this process,
        as for tensors on a GPU); the results are the same, in the same order, for any number of workers.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        restored, degraded = _image_lists(restored, degraded)
        if _on_a_device(restored + (degraded or [])):
            workers = 0
        if workers:
            restored, degraded = _for_workers(restored), None if degraded is None else _for_workers(degraded)
        batches = DataLoader(
            range(len(restored)),
            batch_size=batch_size,
            collate_fn=_Batches(self.backend.prepare, restored, degraded, _tasks(hallucination)),
            num_workers=workers,
        )
        readings, halls = defaultdict(list), []
        # an iterator: tqdm.auto calls iter() on what it wraps, and a second iter() would start a second set of workers
        for inputs in tqdm(iter(batches), total=len(batches), desc="LL-Score", disable=not progress):
            if isinstance(inputs, LLScoreError):
                raise inputs
            reading, p_hallucination = self.backend.read(inputs)
            for name in READING_FIELDS:
                if getattr(reading, name) is not None:
                    readings[name].append(getattr(reading, name).cpu())
            if hallucination:
                halls.append(p_hallucination.cpu())
        collected = {name: torch.cat(parts).numpy() for name, parts in readings.items()}
        return ScoreResults(
            names=_names(restored),
            score=collected["score"],
            std=collected.get("std"),
            distribution=collected.get("distribution"),
            p_hallucination=torch.cat(halls).numpy() if hallucination else None,
            level_words=self.config.prompts.level_words,
            quality_logit=collected.get("logit"),
        )

    def score_across_processes(
        self,
        restored: Sequence[ImageLike],
        degraded: Sequence[ImageLike] | None = None,
        batch_size: int = 8,
        progress: bool = False,
        workers: int = 0,
    ) -> ScoreResults:
        """`score` with the images shared out over the processes of `accelerate launch` (one process: `score`).

        Each process scores its share (accelerate's `split_between_processes`, the last image repeated so that
        shares are equal) and every process gets all results back in input order: each image is scored once,
        and the results are those of a single process.
        """
        state = PartialState()
        restored = list(restored)
        with state.split_between_processes(list(range(len(restored))), apply_padding=True) as share:
            part = self.score(
                [restored[i] for i in share],
                None if degraded is None else [degraded[i] for i in share],
                batch_size=batch_size,
                progress=progress and state.is_main_process,
                workers=workers,
            )
        if state.num_processes == 1:
            return part
        fields = [name for name in SHARED_FIELDS if getattr(part, name) is not None]
        columns = [getattr(part, name) for name in fields]
        rows = gather_object([(index, *values) for index, *values in zip(share, *columns, strict=True)])
        by_row = {row[0]: row[1:] for row in rows}  # the padding repeats the last row; it is kept once
        ordered = [by_row[i] for i in range(len(restored))]
        gathered = {name: np.stack([row[k] for row in ordered]) for k, name in enumerate(fields)}
        return ScoreResults(
            names=_names(restored),
            level_words=part.level_words,
            **{name: gathered.get(name) for name in SHARED_FIELDS},
        )

    def compare(
        self,
        a: Sequence[ImageLike],
        b: Sequence[ImageLike],
        degraded: Sequence[ImageLike] | None = None,
        batch_size: int = 8,
    ) -> CompareResults:
        """P(A better than B) for restorations of the same degraded input (`llscore.scoring.pair_probability`)."""
        a, b = _image_list(a, "a"), _image_list(b, "b")
        if len(a) != len(b):  # checked before scoring: otherwise each A would be compared with the first B
            raise ValueError(f"a has {len(a)} images but b has {len(b)}; compare pairs them one to one")
        a_results = self.score(a, degraded, batch_size=batch_size, hallucination=False)
        b_results = self.score(b, degraded, batch_size=batch_size, hallucination=False)
        p = pair_probability(a_results.reading(), b_results.reading())
        return CompareResults(p.numpy(), a_results, b_results)
