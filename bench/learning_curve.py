"""Held-out agreement with the simulated people against minutes of training, from finished runs of train.py.

    python bench/learning_curve.py checkpoints/llscore-tiny [other runs ...] --out outputs/learning_curve

Reads each run's `trainer_state.json` (the validations logged during training; the validation split holds
scenes that training never saw) and places every validation at the minutes of training it took, from the run's
own measured step rate, from the validation before training (step 0) on. Writes `learning_curve.csv` and `learning_curve.png` (within-source SRCC, pairwise
accuracy and hallucination AUROC against minutes; higher is better on every axis).
"""

# ruff: noqa: E402  (the imports after the guard below)
from __future__ import annotations

import argparse
import json
from pathlib import Path

from llscore.hub_kernels import keep_bitsandbytes_off_the_hub

# first: llscore.runs, imported below, imports transformers' Trainer and so bitsandbytes, which would ask the Hub
# for a kernel
keep_bitsandbytes_off_the_hub()

import matplotlib.pyplot as plt
import pandas as pd

from llscore.report import save_figure
from llscore.runs import VALIDATION_REPORT

METRICS = {
    "eval_within_source_srcc": "within-source SRCC",
    "eval_pairwise_acc": "pairwise accuracy",
    "eval_hallucination_auroc": "hallucination AUROC",
}


def curve(run: Path) -> pd.DataFrame:
    """One row per validation: step, minutes of training, and the validation metrics; step 0 is the validation
    before training (train.py's `validation.json`) when the run made one."""
    state = json.loads((run / "trainer_state.json").read_text())
    before = json.loads((run / VALIDATION_REPORT).read_text()).get("before", {})
    start = (
        [{"step": 0} | {name: before[name.replace("eval_", "val_", 1)] for name in METRICS}] if before else []
    )
    history = state["log_history"]
    end = next(entry for entry in history if "train_runtime" in entry)
    seconds_per_step = end["train_runtime"] / state["global_step"]
    rows = [
        {"run": run.name, "step": entry["step"], "minutes": entry["step"] * seconds_per_step / 60}
        | {name: entry[name] for name in METRICS if name in entry}
        for entry in start + history
        if "eval_within_source_srcc" in entry
    ]
    return pd.DataFrame(rows).drop_duplicates("step", keep="last")


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="output_dir of finished train.py runs")
    parser.add_argument("--out", type=Path, default=Path("outputs/learning_curve"))
    args = parser.parse_args(argv)
    table = pd.concat([curve(run) for run in args.runs], ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "learning_curve.csv", index=False, float_format="%.4f")
    figure, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.2))
    for axis, (column, label) in zip(axes, METRICS.items(), strict=True):
        for run, part in table.groupby("run", sort=False):
            axis.plot(part["minutes"], part[column], marker="o", label=run)
        axis.set(xlabel="minutes of training (2 CPU cores)", ylabel=label, title=f"validation {label}")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    save_figure(figure, args.out / "learning_curve.png")
    print(table.to_string(index=False, float_format="%.3f"))
    return table


if __name__ == "__main__":
    main()
