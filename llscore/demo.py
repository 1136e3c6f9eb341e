"""`llscore demo`: a page to judge restorations by eye (docs/demo.md).

`judge` is the page's whole computation, apart from Gradio: one `LLScore.score` call over the restorations of
one degraded input, the reward from `LLScoreReward.combine`, and P(A better than B) between every two from
`pair_probability` (what `LLScore.compare` answers), so the numbers on the page are the API's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from llscore.reward import LLScoreReward
from llscore.scoring import QualityReading, pair_probability
from llscore.serving.items import ItemError, Limits, decode_image


@dataclass
class Judgement:
    """The restorations ranked by quality (best first), with the pairwise matrix in that order."""

    names: list[str]
    quality: np.ndarray
    spread: np.ndarray | None
    p_hallucination: np.ndarray
    reward: np.ndarray
    better: np.ndarray  # better[i, j] = P(names[i] better than names[j])

    def rows(self) -> list[list]:
        spread = self.spread if self.spread is not None else [float("nan")] * len(self.names)
        return [
            [rank + 1, name, round(float(q), 4), round(float(s), 4), round(float(p), 4), round(float(r), 4)]
            for rank, (name, q, s, p, r) in enumerate(
                zip(self.names, self.quality, spread, self.p_hallucination, self.reward, strict=True)
            )
        ]


def _subset(reading: QualityReading, order: np.ndarray, axis: int) -> QualityReading:
    def pick(values):
        return None if values is None else values[torch.from_numpy(order)].unsqueeze(axis)

    return QualityReading(None, None, pick(reading.score), pick(reading.std), pick(reading.logit))


def judge(
    reward: LLScoreReward, degraded: Image.Image, restorations: list[tuple[str, Image.Image]]
) -> Judgement:
    """Score each restoration of `degraded` and compare every two (see the module docstring)."""
    if not restorations:
        raise ItemError("add at least one restoration")
    names = [name for name, _ in restorations]
    images = [image for _, image in restorations]
    results = reward.scorer.score(images, [degraded] * len(images), batch_size=8)
    quality = torch.from_numpy(results.score)
    p_hallucination = torch.from_numpy(results.p_hallucination)
    order = np.argsort(-results.score, kind="stable")
    reading = results.reading()
    better = pair_probability(_subset(reading, order, 1), _subset(reading, order, 0)).numpy()
    return Judgement(
        names=[names[i] for i in order],
        quality=results.score[order],
        spread=None if results.std is None else results.std[order],
        p_hallucination=results.p_hallucination[order],
        reward=reward.combine(quality, p_hallucination).numpy()[order],
        better=better,
    )


UPLOAD_LIMITS = Limits()


def read_upload(path: str | Path, limits: Limits = UPLOAD_LIMITS) -> Image.Image:
    """An uploaded file as an image, or ItemError in one line naming it (not an image, too large)."""
    name = Path(path).name
    return decode_image(Path(path).read_bytes(), limits, name)[0]


def checkpoint_record(ckpt: str | Path) -> dict:
    """What the page says of the checkpoint: its name, formulation, contract, and the records it carries."""
    folder = Path(ckpt)
    record = {"checkpoint": str(ckpt)}
    for name in ("llscore_config.json", "training_data.json", "validation.json"):
        if (folder / name).is_file():
            record[name.removesuffix(".json")] = json.loads((folder / name).read_text())
    return record


def build_page(reward: LLScoreReward, ckpt: str):
    """The Gradio page: a degraded input and restorations in, the ranked table and the pairwise matrix out; a bad
    upload is one line on the page, which stays usable."""
    import gradio as gr

    record = checkpoint_record(ckpt)
    config = reward.scorer.config

    def run(degraded_file, restored_files, progress=gr.Progress()):  # noqa: B008 (Gradio's way)
        try:
            if degraded_file is None or not restored_files:
                raise ItemError("add the degraded input and at least one restoration")
            progress(0.1, desc="reading the images")
            degraded = read_upload(degraded_file)
            restorations = [(Path(f).name, read_upload(f)) for f in restored_files]
            progress(0.4, desc="scoring")
            verdict = judge(reward, degraded, restorations)
        except Exception as err:  # one line on the page; the page stays as it was
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            return gr.update(), gr.update(), f"**Error:** {message}"
        matrix = [
            [name, *(round(float(p), 4) for p in row)]
            for name, row in zip(verdict.names, verdict.better, strict=True)
        ]
        return (
            verdict.rows(),
            gr.update(value=matrix, headers=["P(row better than column)", *verdict.names]),
            "",
        )

    with gr.Blocks(title="LL-Score") as page:
        gr.Markdown(
            f"# LL-Score\nCheckpoint `{ckpt}` · formulation `{config.formulation}` · "
            f"quality on [{config.prompts.score_range[0]:g}, {config.prompts.score_range[1]:g}] · "
            f"reward = quality − {reward.hallucination_weight:g} · P(hallucination)"
        )
        with gr.Row():
            degraded = gr.File(label="degraded input", file_types=["image"], elem_id="degraded")
            restored = gr.File(
                label="restorations", file_count="multiple", file_types=["image"], elem_id="restored"
            )
        button = gr.Button("Judge", elem_id="judge")
        error = gr.Markdown(elem_id="error")
        table = gr.Dataframe(
            headers=["rank", "restoration", "quality", "spread", "P(hallucination)", "reward"],
            elem_id="ranking",
            interactive=False,
        )
        matrix = gr.Dataframe(elem_id="pairwise", interactive=False)
        with gr.Accordion("what this checkpoint is", open=False):
            gr.JSON(record)
        button.click(run, [degraded, restored], [table, matrix, error])
    return page
