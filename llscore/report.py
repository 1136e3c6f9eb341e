"""Evaluation outputs: the console / markdown tables, metrics.json, scores.csv and PNG plots (a report written
aside whole, then swapped in: `write_outputs`)."""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from llscore.data.provenance import describe
from llscore.files import json_default, write_all_atomic, write_atomic
from llscore.markdown import markdown_table
from llscore.rivals import RESTORATION_STRENGTH, RIVALS

logger = logging.getLogger(__name__)

OVERALL_COLUMNS = (
    ("srcc", "SRCC"),
    ("plcc", "PLCC"),
    ("plcc_logistic", "PLCC (logistic)"),
    ("krcc", "KRCC"),
    ("within_source_srcc", "within-source SRCC"),
    ("pairwise_acc", "pairwise acc"),
    ("vote_agreement", "vote agreement"),
)
PAIR_KEYS = ("pairwise_acc", "vote_agreement")


def _number(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _cell(result: dict, key: str) -> str:
    """One table cell of an evaluator that ran (unavailable ones are listed once: `unavailable_text`)."""
    if "error" in result:
        return f"error: {result['error']}"
    text = _number(result.get(key))
    if f"{key}_ci" in result:
        low, high = result[f"{key}_ci"]
        text += f" [{_number(low)}, {_number(high)}]"
    if key == "plcc_logistic" and result.get("logistic_converged") is False:
        text += " (fit failed)"
    return text


def overall_table(report: dict) -> pd.DataFrame:
    """One row per evaluator that ran, LL-Score first, then baselines by SRCC (unavailable ones are listed once,
    elsewhere: `unavailable_text`)."""
    results = report["overall"]

    def order(name):
        srcc = results[name].get("srcc")
        return (
            name != "llscore",
            name not in RIVALS,
            "srcc" not in results[name],
            -(srcc if srcc is not None and srcc == srcc else -9),
        )

    pairwise = "pairwise" not in (report.get("skipped") or {})  # no pairs: their columns would be all n/a
    columns = [(key, title) for key, title in OVERALL_COLUMNS if pairwise or key not in PAIR_KEYS]
    rows = [[name, *(_cell(results[name], key) for key, _ in columns)] for name in sorted(results, key=order)]
    return pd.DataFrame(rows, columns=["evaluator", *(title for _, title in columns)])


def grouped_table(report: dict, section: str, key: str = "srcc") -> pd.DataFrame:
    """Groups (tasks or families) as rows, evaluators as columns, one metric per cell."""
    groups = report[section]
    names = list(report["overall"])
    rows = [[group, *(_cell(groups[group][name], key) for name in names)] for group in sorted(groups)]
    return pd.DataFrame(rows, columns=[section.removeprefix("per_"), *names])


RIVAL_NAMES = {
    "llscore": "LL-Score",
    "restoration_strength": "restoration strength (how far the output moved from its input)",
    "restorer_prior": "restorer prior (the restoration model's mean human score in training)",
}
RIVAL_COLUMNS = (
    ("within_source_srcc", "within-source SRCC"),
    ("pairwise_acc", "pairwise acc"),
    ("srcc", "SRCC"),
)


def rivals_table(report: dict) -> pd.DataFrame:
    """LL-Score beside the trivial rivals (llscore/rivals.py) on the whole split and on unseen restorers."""
    unseen = report.get("unseen_restorers", {}).get("scores", {})
    rows = []
    for name, title in RIVAL_NAMES.items():
        if name not in report["overall"]:
            continue
        row = [title, *(_number(report["overall"][name].get(key)) for key, _ in RIVAL_COLUMNS)]
        if unseen:
            row += [_number(unseen[name].get(key)) for key, _ in RIVAL_COLUMNS]
        rows.append(row)
    columns = [f"{title}, all" for _, title in RIVAL_COLUMNS]
    if unseen:
        columns += [f"{title}, unseen restorers" for _, title in RIVAL_COLUMNS]
    return pd.DataFrame(rows, columns=["evaluator", *columns])


def hallucination_rivals_table(report: dict) -> pd.DataFrame:
    """P(hallucination) beside distance from the input: AUROC over all outputs and within each restorer."""
    detectors = {"llscore": ("LL-Score P(hallucination)", report.get("hallucination", {}))}
    if RESTORATION_STRENGTH in report.get("hallucination_rivals", {}):
        detectors[RESTORATION_STRENGTH] = (
            "distance from the input",
            report["hallucination_rivals"][RESTORATION_STRENGTH],
        )
    unseen = report.get("unseen_restorers", {}).get("hallucination", {})
    keys = (("auroc", "AUROC"), ("within_restorer_auroc", "within-restorer AUROC"))
    rows = [
        [
            title,
            *(_number(values.get(k)) for k, _ in keys),
            *(_number(unseen.get(name, {}).get(k)) for k, _ in keys),
        ]
        for name, (title, values) in detectors.items()
    ]
    columns = [f"{t}, all" for _, t in keys] + [f"{t}, unseen restorers" for _, t in keys]
    return pd.DataFrame(rows, columns=["detector", *columns])


def unavailable_text(report: dict) -> str:
    """One line naming the baselines that could not run (their reasons are in report.md), or ''."""
    names = list(report.get("unavailable") or {})
    return f"unavailable here (reasons in report.md): {', '.join(names)}" if names else ""


def skipped_text(report: dict) -> str:
    """One line naming the metrics the data could not give (their reasons are in report.md), or ''."""
    names = list(report.get("skipped") or {})
    return (
        f"skipped, the data lacks what they need (reasons in report.md): {', '.join(names)}" if names else ""
    )


def _data_lines(report: dict) -> list[str]:
    """What was evaluated, and what the evaluated model was trained on, from their records (provenance)."""
    lines = [f"Evaluated on {describe(report['data'])}.\n"] if report.get("data") else []
    trained = report.get("llscore_model", {}).get("training_data")
    if trained:
        lines.append(f"The LL-Score checkpoint was trained on {describe(trained['train'])}.\n")
    return lines


def _rivals_section(report: dict) -> list[str]:
    """What LL-Score must beat, first: an evaluator's number means something only beside its trivial rivals."""
    if "llscore" not in report["overall"] or not any(r in report["overall"] for r in RIVALS):
        return []
    models = report.get("unseen_restorers", {}).get("models") or []
    unseen = (
        f"Unseen restorers: {', '.join(f'`{m}`' for m in models)}, whose outputs training never saw "
        "(correlations on their outputs, pairwise accuracy on every pair with one of them)."
        if models
        else "Every restoration model of this split was seen in training."
    )
    parts = [
        "## What LL-Score must beat\n",
        "Two trivial rivals that do not judge the image: how far the output moved from its input, and which "
        f"model made it. {unseen}\n",
        markdown_table(rivals_table(report)) + "\n",
    ]
    if "hallucination" in report:
        parts.append(markdown_table(hallucination_rivals_table(report)) + "\n")
    return parts


def markdown_report(report: dict, title: str) -> str:
    skipped = report.get("skipped") or {}
    full_reference = (
        [
            "The dataset is full-reference: LL-Score is shown the clean reference as its input, and full-reference "
            "baselines compare with it (`m@ref`).\n"
        ]
        if report.get("full_reference")
        else []
    )
    parts = [
        f"# {title}\n",
        f"Split `{report['split']}`: {report['n_images']} restored images, {report['n_pairs']} human-compared pairs. "
        f"Brackets: 95% bootstrap intervals over source images ({report['n_boot']} resamples). LL-Score's score is "
        "on [1, 5]; baselines are oriented so that higher is better; `m@input` compares with the degraded input, "
        "`m@ref` with the clean reference.\n",
        *full_reference,
        *_data_lines(report),
        *_rivals_section(report),
        "## Overall\n",
        markdown_table(overall_table(report)),
        "\n## SRCC per task\n",
        markdown_table(grouped_table(report, "per_task")),
    ]
    if "pairwise" not in skipped:
        parts += [
            "\n## Pairwise accuracy per task\n",
            markdown_table(grouped_table(report, "per_task", "pairwise_acc")),
        ]
    if "per_family" in report:
        parts += ["\n## SRCC per model family\n", markdown_table(grouped_table(report, "per_family"))]
    if "human_ceiling" in report:
        ceiling = report["human_ceiling"]
        parts.append(
            "\n## Human–human ceiling\n\n"
            f"A held-out vote agrees with the majority of the other votes on its pair {_number(ceiling.get('loo_agreement'))} "
            f"of the time ({ceiling.get('n_pairs')} pairs); the best reachable vote agreement is "
            f"{_number(ceiling.get('vote_agreement_bound'))}.\n"
        )
    if "hallucination" in report:
        h = report["hallucination"]
        parts.append(
            "\n## Hallucination (LL-Score P(hallucination) vs annotator majority)\n\n"
            + markdown_table(
                pd.DataFrame(
                    [[_number(h.get(k)) for k in ("auroc", "ap", "f1", "ece", "n", "n_positive")]],
                    columns=["AUROC", "AP", "F1@0.5", "ECE", "images", "hallucinated"],
                )
            )
        )
    board = report["leaderboard"]
    parts.append(
        "\n\n## Restoration-model leaderboard\n\nMean score per restoration model; last row: Kendall τ between each "
        "evaluator's ranking of the models and the human ranking.\n\n"
    )
    frame = pd.DataFrame({"model": board["models"], "human": board["human"], **board["means"]})
    frame = frame.sort_values("human", ascending=False)
    tau = pd.DataFrame([{"model": "Kendall τ vs human", "human": 1.0, **board["kendall_tau"]}])
    parts.append(
        markdown_table(pd.concat([frame, tau]).map(lambda v: _number(v) if isinstance(v, float) else v))
    )
    if report["unavailable"]:
        parts.append("\n\n## Unavailable baselines\n")
        parts.extend(f"- `{name}`: {reason}" for name, reason in report["unavailable"].items())
    if skipped:
        parts.append("\n\n## Skipped\n\nWhat this data cannot measure, and why:\n")
        parts.extend(f"- `{name}`: {reason}" for name, reason in skipped.items())
    return "\n".join(parts) + "\n"


def png(figure) -> bytes:
    """Lay out, render as PNG, and free the figure."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def save_figure(figure, path: Path) -> None:
    """The figure as a PNG file, written atomically."""
    write_atomic(path, png(figure))


def plot_scatter(scores: pd.DataFrame, report: dict, names: list[str]) -> bytes:
    """Each evaluator against the human score, one panel each, oriented as the tables are (higher is better:
    a lower-is-better baseline is plotted negated) and titled with the tables' SRCC."""
    from llscore.baselines import column_spec

    columns = min(4, len(names))
    rows = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names, strict=False):
        sign = 1 if name == "llscore" or name in RIVALS else column_spec(name).sign
        known = scores[name].notna()
        axis.scatter(sign * scores.loc[known, name], scores.loc[known, "human_score"], s=6, alpha=0.6)
        srcc = report["overall"][name].get("srcc")
        axis.set_title(name if srcc is None else f"{name}  SRCC {srcc:.2f}", fontsize=9)
        axis.set_xlabel(f"{'−' if sign < 0 else ''}{name} (higher is better)", fontsize=8)
        axis.set_ylabel("human score [1, 5]", fontsize=8)
    for axis in list(axes.flat)[len(names) :]:
        axis.axis("off")
    return png(figure)


def plot_per_task(report: dict) -> bytes:
    """Per-task SRCC of LL-Score beside the best baseline (best by overall SRCC)."""
    overall = report["overall"]
    baselines = [
        n
        for n in overall
        if n != "llscore" and n not in RIVALS and not math.isnan(overall[n].get("srcc", math.nan))
    ]
    names = [n for n in ("llscore",) if n in overall]
    if baselines:
        names.append(max(baselines, key=lambda n: overall[n]["srcc"]))
    tasks = sorted(report["per_task"])
    figure, axis = plt.subplots(figsize=(max(6, 0.6 * len(tasks)), 3.5))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = [report["per_task"][t][name].get("srcc", np.nan) for t in tasks]
        axis.bar(np.arange(len(tasks)) + i * width, np.nan_to_num(values), width, label=name)
    axis.set_xticks(
        np.arange(len(tasks)) + width * (len(names) - 1) / 2, tasks, rotation=60, ha="right", fontsize=8
    )
    axis.set_ylabel("SRCC vs human")
    axis.axhline(0, color="black", linewidth=0.5)
    axis.legend(fontsize=8)
    return png(figure)


def plot_reliability(hallucination: dict) -> bytes:
    """Reliability diagram of P(hallucination): predicted probability vs observed frequency per bin."""
    bins = hallucination["reliability"]
    figure, axis = plt.subplots(figsize=(3.6, 3.4))
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    used = np.asarray(bins["count"]) > 0
    axis.plot(np.asarray(bins["mean_prob"])[used], np.asarray(bins["frequency"])[used], marker="o")
    axis.set_xlabel("predicted P(hallucination)")
    axis.set_ylabel("observed frequency")
    axis.set_title(f"ECE {hallucination['ece']:.3f}", fontsize=9)
    return png(figure)


REPORT_FILES = ("metrics.json", "scores.csv", "report.md")
REPORT_PLOTS = ("scatter_vs_human.png", "per_task_srcc.png", "hallucination_reliability.png")
"""Files that an eval.py report consists of (it draws the last plot only for a checkpoint's hallucination)."""


def check_report_folder(out: str | Path, overwrite: bool) -> None:
    """Refuse a folder that holds an earlier report (a user may have edited it) unless `overwrite`."""
    out = Path(out)
    if out.is_file():
        raise FileExistsError(f"--out {out} is a file; it names the folder for the report")
    earlier = [name for name in REPORT_FILES if (out / name).exists()]
    if earlier and not overwrite:
        raise FileExistsError(
            f"--out {out} already holds a report ({', '.join(earlier)}); pass --overwrite to replace it, "
            "or choose another --out"
        )


def write_outputs(out: str | Path, report: dict, scores: pd.DataFrame, title: str) -> list[Path]:
    """Every output of eval.py, written aside and swapped in together (`write_all_atomic`): a failure (a full
    disk) leaves the earlier report whole and no part of this one. The earlier report's own files that this one
    does not rewrite (a plot it does not draw) are then removed: a report's folder never mixes two runs; the
    other files in it stay."""
    out = Path(out)
    names = list(report["overall"])
    files = {
        out / "metrics.json": json.dumps(report, indent=2, default=json_default) + "\n",
        out / "scores.csv": scores.to_csv(index=False),
        out / "report.md": markdown_report(report, title),
        out / "scatter_vs_human.png": plot_scatter(scores, report, names),
        out / "per_task_srcc.png": plot_per_task(report),
    }
    reliability = report.get("hallucination", {}).get("reliability")
    if reliability and sum(count > 0 for count in reliability["count"]) >= 2:  # one point is no diagram
        files[out / "hallucination_reliability.png"] = plot_reliability(report["hallucination"])
    written = write_all_atomic(files)
    for name in (*REPORT_FILES, *REPORT_PLOTS):
        if out / name not in files and (out / name).is_file():
            logger.info("removing the earlier report's %s (this report has none)", out / name)
            (out / name).unlink()
    return written
