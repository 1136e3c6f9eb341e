"""The model card of a pushed LL-Score checkpoint: its metadata (model-index from eval.py's report), results, score
scale, prompts, resolution, data and usage, rendered from llscore/templates/model_card.md. llscore/hub.py pushes it."""

from __future__ import annotations

import json
import math
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from llscore.data.provenance import LL_BENCH_HUB_ID, describe
from llscore.formulations import formulation_of
from llscore.markdown import markdown_table
from llscore.modeling import LLSCORE_CONFIG_NAME
from llscore.prompts import LLScoreConfig
from llscore.report import OVERALL_COLUMNS, overall_table

LL_BENCH = "LL-Bench"
LL_BENCH_LICENSE = "cc-by-nc-4.0"
HALLUCINATION_METRICS = (("auroc", "AUROC"), ("ap", "AP"), ("ece", "ECE"))


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def evaluated_on(report: dict) -> dict:
    """The record of the data an eval.py report measured (metrics.json `data`); an older report has none."""
    return report.get("data") or {"name": "an unrecorded dataset", "split": report.get("split")}


def eval_results(report: dict) -> list[EvalResult]:
    """model-index entries: LL-Score's overall agreement with humans and its hallucination detection."""
    data = evaluated_on(report)
    common = {
        "dataset_type": data.get("hub_id") or data["name"],
        "dataset_name": data["name"],
        "dataset_split": report.get("split"),
    }
    sections = [
        (
            "image-quality-assessment",
            "Quality of restored images",
            report["overall"]["llscore"],
            OVERALL_COLUMNS,
        ),
        (
            "hallucination-detection",
            "Hallucination in restored images",
            report.get("hallucination", {}),
            HALLUCINATION_METRICS,
        ),
    ]
    return [
        EvalResult(
            task_type=task,
            task_name=task_name,
            metric_type=key,
            metric_name=title,
            metric_value=results[key],
            **common,
        )
        for task, task_name, results, columns in sections
        for key, title in columns
        if _finite(results.get(key))
    ]


def _results_section(report: dict | None) -> str:
    if report is None:
        return (
            "No evaluation was attached to this upload (`llscore push --eval-dir` adds eval.py's results).\n"
        )
    text = (
        f"`python eval.py` on the `{report.get('split')}` split of {evaluated_on(report)['name']}: "
        f"{report.get('n_images')} restored images, {report.get('n_pairs')} human-compared pairs. Correlations are with the human scores; brackets "
        f"are 95% bootstrap intervals over source images. Baselines are oriented so that higher is better.\n\n"
        f"{markdown_table(overall_table(report))}\n"
    )
    unavailable = report.get("unavailable", {})
    if unavailable:
        missing = "; ".join(f"`{name}` ({reason})" for name, reason in unavailable.items())
        text += f"\nBaselines that could not run where this was evaluated: {missing}.\n"
    hallucination = report.get("hallucination", {})
    found = [
        f"{title} {hallucination[key]:.3f}"
        for key, title in HALLUCINATION_METRICS
        if _finite(hallucination.get(key))
    ]
    if found:
        text += (
            f"\nHallucination detection (P(hallucination) vs the annotators' majority): {', '.join(found)}.\n"
        )
    return text


def _training_data_section(training: dict | None) -> str:
    if not training:
        return "The training data of this checkpoint is not recorded (it has no `training_data.json`)."
    train = training["train"]
    text = f"Trained on {describe(train)}."
    if "validation" in training:
        text += f" The checkpoint was selected on {describe(training['validation'])}."
    if train.get("hub_id") == LL_BENCH_HUB_ID or train["name"] == LL_BENCH:
        text += " **LL-Bench is licensed CC-BY-NC-4.0** (non-commercial use)."
    elif train.get("license"):
        text += f" Its licence: {train['license']}."
    return text


def _py(value) -> str:
    """A Python literal for a string or a list of strings / numbers, in double quotes (JSON is valid Python here)."""
    return json.dumps(value, ensure_ascii=False)


MODEL_CARD_TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
"""The card's text (a Jinja template, rendered by `huggingface_hub.ModelCard.from_template`)."""


def model_card(
    repo_id: str,
    config: LLScoreConfig,
    adapter: bool,
    base: str | None,
    report: dict | None = None,
    training: dict | None = None,
    license: str = LL_BENCH_LICENSE,
) -> ModelCard:
    """README.md: metadata (model-index from `report`), results, score scale, prompts, resolution, data, usage.

    The data named are those of the records only: `training` (the checkpoint's training_data.json, or a
    declared dataset) and the report's own `data`; without a record the card says that it is not recorded."""
    name = repo_id.split("/")[-1]
    formulation = formulation_of(config)
    data = ModelCardData(
        library_name="peft" if adapter else "transformers",
        pipeline_tag="image-text-to-text",
        base_model=base,
        datasets=[training["train"]["hub_id"]] if training and training["train"].get("hub_id") else None,
        license=license,
        tags=[
            "llscore",
            "image-quality-assessment",
            "image-restoration",
            "reward-model",
            *(["lora"] if adapter else []),
            *formulation.card_tags,
        ],
        model_name=name,
        eval_results=eval_results(report) if report else None,
    )
    p, r = config.prompts, config.resolution
    low, high = p.score_range
    kind = (
        f"a LoRA adapter over [{base}](https://huggingface.co/{base}); loading it downloads the base"
        if adapter
        else "a plain checkpoint (LoRA merged into the base, or fully fine-tuned)"
        + (f" of [{base}](https://huggingface.co/{base})" if base else "")
    )
    python_literals = {
        "repo_id": repo_id,
        "yes": p.yes_no_words[0],
        "no": p.yes_no_words[1],
        "yes_no_words": list(p.yes_no_words),
        "level_words": list(p.level_words),
        "level_weights": list(p.level_weights),
        "degraded_caption": p.degraded_caption,
        "restored_caption": p.restored_caption,
        "quality_question": p.quality_questions[0],
        "quality_stem": p.quality_stem,
        "hallucination_question": p.hallucination_questions[0],
        "hallucination_stem": p.hallucination_stem,
        "joint_question": p.joint_questions[0],
        "joint_stem": p.joint_stem,
        "head_tokens": list(p.head_tokens),
    }
    return ModelCard.from_template(
        data,
        template_path=str(MODEL_CARD_TEMPLATE),
        name=name,
        kind=kind,
        adapter=adapter,
        **formulation.card_fields,
        repo_id=repo_id,
        prompts=p,
        py={key: _py(value) for key, value in python_literals.items()},
        low=f"{low:g}",
        high=f"{high:g}",
        levels=", ".join(f"`{_py(w)}` ({v:g})" for w, v in zip(p.level_words, p.level_weights, strict=True)),
        results=_results_section(report),
        training_data=_training_data_section(training),
        config_name=LLSCORE_CONFIG_NAME,
        min_pixels=r.min_pixels,
        max_pixels=r.max_pixels,
        min_pixels_text=f"{r.min_pixels:,}",
        max_pixels_text=f"{r.max_pixels:,}",
        license=license,
    )


"""HTTP libraries that huggingface_hub has used; their errors mean that the Hub could not be reached."""
