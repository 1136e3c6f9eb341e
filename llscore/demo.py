"""`llscore demo`: a page to judge restorations by eye (docs/demo.md).

`judge` is the page's whole computation, apart from Gradio: one `LLScore.score` call over the restorations of
one degraded input, the reward from `LLScoreReward.combine`, and P(A better than B) between every two from
`pair_probability` (what `LLScore.compare` answers), so the numbers on the page are the API's. The examples are
LL-Bench-mini's test sources (`examples_from_prepared`) or a folder of them (`write_examples`, what a Space
carries), with the humans' scores shown beside LL-Score's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
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
    people: list[float | None] = field(default_factory=list)
    """The humans' mean score of each restoration, in the same order, where known (an example's)."""

    def rows(self) -> list[list]:
        spread = self.spread if self.spread is not None else [float("nan")] * len(self.names)
        people = self.people or [None] * len(self.names)
        return [
            [
                rank + 1,
                name,
                round(float(q), 4),
                round(float(s), 4),
                round(float(p), 4),
                round(float(r), 4),
                None if h is None else round(float(h), 4),
            ]
            for rank, (name, q, s, p, r, h) in enumerate(
                zip(self.names, self.quality, spread, self.p_hallucination, self.reward, people, strict=True)
            )
        ]


def _subset(reading: QualityReading, order: np.ndarray, axis: int) -> QualityReading:
    def pick(values):
        return None if values is None else values[torch.from_numpy(order)].unsqueeze(axis)

    return QualityReading(None, None, pick(reading.score), pick(reading.std), pick(reading.logit))


def judge(
    reward: LLScoreReward,
    degraded: Image.Image,
    restorations: list[tuple[str, Image.Image]],
    people: list[float | None] | None = None,
) -> Judgement:
    """Score each restoration of `degraded` and compare every two (see the module docstring); `people` are the
    humans' scores of the restorations where known, in their order."""
    if not restorations:
        raise ItemError("add at least one restoration")
    names = [name for name, _ in restorations]
    images = [image for _, image in restorations]
    results = reward.scorer.score(images, [degraded] * len(images), batch_size=8, progress=True)
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
        people=[people[i] for i in order] if people else [],
    )


@dataclass(frozen=True)
class Example:
    """One degraded input and its restorations, with the humans' mean score of each restoration (by file)."""

    name: str
    degraded: Path
    restored: tuple[Path, ...]
    people: dict[str, float]  # restored file name -> the humans' mean score

    def scores_by_content(self) -> dict[str, float]:
        """The humans' scores keyed by each restoration's file digest: how the page knows an uploaded example."""
        return {
            file_digest(path): self.people[path.name] for path in self.restored if path.name in self.people
        }


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


PEOPLE_FILE = "people.json"
"""An example folder's humans' scores: {restored file name: mean score}."""


def examples_from_prepared(prepared_dir: str | Path, count: int = 3) -> list[Example]:
    """`count` test sources of a prepared dataset (LL-Bench-mini's: photographs training never saw), each of
    another task, with every restoration the humans scored."""
    from llscore.data.prepared import load_prepared

    images = (
        load_prepared(prepared_dir).quality["test"].to_pandas().sort_values(["task", "source_id", "image_id"])
    )
    picked = images.drop_duplicates("task")["source_id"].head(count)
    examples = []
    for source in picked:
        rows = images[images["source_id"] == source]
        restored = tuple(Path(path) for path in rows["restored"])
        examples.append(
            Example(
                f"{source} ({rows['task'].iloc[0]})",
                Path(rows["degraded"].iloc[0]),
                restored,
                {path.name: float(score) for path, score in zip(restored, rows["score"], strict=True)},
            )
        )
    return examples


def write_examples(examples: list[Example]) -> dict[str, Path | bytes]:
    """The examples as files of a folder (`examples_from_folder` reads them back in this order): for each,
    <k>_<source>/degraded<ext>, the restorations under <k>_<source>/restored/, and <k>_<source>/people.json."""
    files: dict[str, Path | bytes] = {}
    for k, example in enumerate(examples):
        folder = f"{k:02d}_{example.name.split(' ')[0]}"
        files[f"{folder}/degraded{example.degraded.suffix}"] = example.degraded
        for path in example.restored:
            files[f"{folder}/restored/{path.name}"] = path
        label = json.dumps({"name": example.name, "people": example.people}, indent=2) + "\n"
        files[f"{folder}/{PEOPLE_FILE}"] = label.encode()
    return files


def examples_from_folder(folder: str | Path) -> list[Example]:
    """The examples `write_examples` laid out under `folder` (none when it is absent)."""
    examples = []
    for record in sorted(Path(folder).glob(f"*/{PEOPLE_FILE}")):
        label = json.loads(record.read_text())
        degraded = next(record.parent.glob("degraded.*"))
        restored = tuple(sorted((record.parent / "restored").iterdir()))
        examples.append(Example(label["name"], degraded, restored, label["people"]))
    return examples


def read_examples(path: str | Path, count: int = 3) -> list[Example]:
    """Examples from a folder `write_examples` laid out, or else from a prepared dataset's test split."""
    if any(Path(path).glob(f"*/{PEOPLE_FILE}")):
        return examples_from_folder(path)[:count]
    return examples_from_prepared(path, count)


UPLOAD_LIMITS = Limits()


def read_upload(path: str | Path, limits: Limits = UPLOAD_LIMITS) -> Image.Image:
    """An uploaded file as an image, or ItemError in one line naming it (not an image, too large)."""
    name = Path(path).name
    return decode_image(Path(path).read_bytes(), limits, name)[0]


def checkpoint_record(name: str, folder: str | Path) -> dict:
    """What the page says of the checkpoint: its name, formulation, contract, and the records it carries."""
    record = {"checkpoint": name}
    for file in ("llscore_config.json", "training_data.json", "validation.json"):
        if (Path(folder) / file).is_file():
            record[file.removesuffix(".json")] = json.loads((Path(folder) / file).read_text())
    return record


def build_page(reward: LLScoreReward, name: str, folder: str | Path | None = None, examples=()):
    """The Gradio page: a degraded input and restorations in (or one of `examples`); the images ranked, the table,
    the pairwise matrix out; a bad upload is one line on the page, which stays usable. `folder` holds the
    checkpoint's records (default: `name`, a local checkpoint)."""
    import gradio as gr

    record = checkpoint_record(name, folder or name)
    config = reward.scorer.config
    people_by_content = {k: v for example in examples for k, v in example.scores_by_content().items()}

    def run(degraded_file, restored_files, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (Gradio's way)
        try:
            if degraded_file is None or not restored_files:
                raise ItemError("add the degraded input and at least one restoration")
            progress(0.05, desc="reading the images")
            degraded = read_upload(degraded_file)
            restorations = [(Path(f).name, read_upload(f)) for f in restored_files]
            people = [people_by_content.get(file_digest(f)) for f in restored_files]
            verdict = judge(
                reward, degraded, restorations, people if any(p is not None for p in people) else None
            )
        except Exception as err:  # one line on the page; the page stays as it was
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            return gr.update(), gr.update(), gr.update(), f"**Error:** {message}"
        matrix = [
            [name, *(round(float(p), 4) for p in row)]
            for name, row in zip(verdict.names, verdict.better, strict=True)
        ]
        shown = dict(restorations)
        gallery = [(degraded, "degraded input")] + [
            (shown[row[1]], f"#{row[0]} {row[1]} · quality {row[2]:.3f} · P(hallucination) {row[4]:.2f}")
            for row in verdict.rows()
        ]
        return (
            gallery,
            verdict.rows(),
            gr.update(value=matrix, headers=["P(row better than column)", *verdict.names]),
            "",
        )

    with gr.Blocks(title="LL-Score") as page:
        gr.Markdown(
            f"# LL-Score\nCheckpoint `{name}` · formulation `{config.formulation}` · "
            f"quality on [{config.prompts.score_range[0]:g}, {config.prompts.score_range[1]:g}] · "
            f"reward = quality − {reward.hallucination_weight:g} · P(hallucination)"
        )
        with gr.Row():
            degraded = gr.File(label="degraded input", file_types=["image"], elem_id="degraded")
            restored = gr.File(
                label="restorations", file_count="multiple", file_types=["image"], elem_id="restored"
            )
        if examples:
            gr.Examples(
                [[str(e.degraded), [str(p) for p in e.restored]] for e in examples],
                [degraded, restored],
                example_labels=[e.name for e in examples],
                label="LL-Bench-mini test photographs (people's scores shown beside LL-Score's)",
            )
        button = gr.Button("Judge", elem_id="judge")
        error = gr.Markdown(elem_id="error")
        gallery = gr.Gallery(label="ranked, best first", columns=6, height="auto", elem_id="gallery")
        table = gr.Dataframe(
            headers=["rank", "restoration", "quality", "spread", "P(hallucination)", "reward", "people"],
            elem_id="ranking",
            interactive=False,
        )
        matrix = gr.Dataframe(elem_id="pairwise", interactive=False)
        with gr.Accordion("what this checkpoint is", open=False):
            gr.JSON(record)
        button.click(run, [degraded, restored], [gallery, table, matrix, error])
    return page
