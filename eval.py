"""Evaluate LL-Score and the classic IQA baselines against human judgments on a benchmark split.

    python eval.py --ckpt checkpoints/llscore-tiny --data data/llbench_mini_prepared [--split test]
                   [--baselines default|none|psnr,ssim,...] [--out outputs/eval] [--batch-size 16] [--zero-shot]
    python eval.py --ckpt checkpoints/llscore-tiny --dataset pipal --data-dir PIPAL     # or kadid10k

    accelerate launch [--num_processes N] eval.py ...   # LL-Score's scoring shared out over N processes / GPUs

Without --ckpt only the baselines are evaluated. With the default --dataset llbench, --data takes a prepared
dataset or a raw LL-Bench folder (prepared on the fly with the same seeded split). Another --dataset is read from
its release folder, laid out as its authors ship it, and evaluated whole (the cross-dataset protocol,
docs/evaluation.md); metrics it cannot give (pairs, hallucination) are listed as skipped. Outputs in --out:
report.md, metrics.json, scores.csv, plots.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from llscore.baselines import DEFAULT_BASELINES, compute_baselines, unknown_baselines
from llscore.data.adapters import ADAPTERS, read_dataset
from llscore.data.inputs import ensure_prepared
from llscore.data.provenance import TRAINING_DATA
from llscore.errors import (
    EXPECTED_ERRORS,
    EvaluationError,
    add_debug_flag,
    count_argument,
    fail,
    fail_after_peer,
    log_progress,
)
from llscore.evaluation import (
    EvalData,
    Evaluators,
    dataset_eval_data,
    evaluate,
    load_eval_data,
    rival_scores,
    score_with_llscore,
)
from llscore.files import claim_folder
from llscore.hub_kernels import keep_bitsandbytes_off_the_hub
from llscore.processes import end_processes, process_device, process_state, use_every_core_when_alone
from llscore.report import (
    check_report_folder,
    overall_table,
    skipped_text,
    unavailable_text,
    write_outputs,
)
from llscore.runtime import add_runtime_arguments, runtime_options

LLBENCH = "llbench"
DEFAULT_DATA = "data/llbench_mini_prepared"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", help="LL-Score checkpoint directory or Hub id (omit: baselines only)")
    parser.add_argument(
        "--dataset",
        choices=(LLBENCH, *ADAPTERS),
        default=LLBENCH,
        help="llbench: a prepared dataset or LL-Bench folder, one split; "
        + "; ".join(
            f"{name}: its release folder ({adapter.layout}), whole" for name, adapter in ADAPTERS.items()
        ),
    )
    parser.add_argument(
        "--data",
        "--data-dir",
        default=None,
        help=f"the dataset's folder (llbench: prepared dataset or bench folder, default {DEFAULT_DATA})",
    )
    parser.add_argument("--split", default=None, help="llbench's split (default test)")
    parser.add_argument(
        "--data-config", default=None, help="column map of a raw bench folder (default: the canonical schema)"
    )
    parser.add_argument("--baselines", default="default", help="default | none | comma-separated pyiqa names")
    parser.add_argument("--out", default="outputs/eval")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    parser.add_argument("--cache-dir", default="outputs/baseline_cache", help="per-image baseline cache")
    parser.add_argument("--batch-size", type=count_argument(1), default=16)
    add_runtime_arguments(parser)
    parser.add_argument(
        "--bootstrap",
        type=count_argument(0),
        default=1000,
        help="bootstrap resamples for the intervals (0: none)",
    )
    parser.add_argument(
        "--zero-shot",
        action="store_true",
        help="--ckpt may be a base model without llscore_config.json: score it with the default prompt contract",
    )
    add_debug_flag(parser)
    return parser.parse_args(argv)


def load_data(args: argparse.Namespace) -> EvalData:
    """The split to evaluate: LL-Bench's prepared split, or another dataset whole through its adapter."""
    if args.dataset == LLBENCH:
        return load_eval_data(
            ensure_prepared(args.data or DEFAULT_DATA, args.data_config), args.split or "test"
        )
    for flag, value in (("--split", args.split), ("--data-config", args.data_config)):
        if value is not None:
            raise EvaluationError(
                f"{flag} is LL-Bench's; --dataset {args.dataset} is evaluated whole: drop it"
            )
    if args.data is None:
        raise EvaluationError(
            f"--dataset {args.dataset} needs --data-dir: its release folder ({ADAPTERS[args.dataset].layout})"
        )
    return dataset_eval_data(read_dataset(args.dataset, args.data))


def main(argv=None) -> int:
    args = parse_args(argv)
    keep_bitsandbytes_off_the_hub()  # before a checkpoint load imports bitsandbytes (docs/architecture.md)
    state = process_state()  # `accelerate launch eval.py` shares the scoring out over the processes
    use_every_core_when_alone(state)  # accelerate gives a lone CPU process one thread
    log_progress(state.is_main_process)
    start = time.perf_counter()
    names = {"default": list(DEFAULT_BASELINES), "none": []}.get(args.baselines)
    if names is None:
        names = [n.strip() for n in args.baselines.split(",") if n.strip()]
    try:
        if not args.ckpt and not names:
            raise EvaluationError("nothing to evaluate: give --ckpt and/or --baselines")
        check_report_folder(args.out, args.overwrite)  # every process stops here, not only the main one
        if state.is_main_process:  # the report is the main process's: one writer per folder
            claim_folder(args.out, "eval.py")
        unknown = unknown_baselines(names)
        if unknown:
            raise EvaluationError(
                f"unknown baseline(s) {', '.join(unknown)}: --baselines takes pyiqa metric names "
                f"(the default set: {', '.join(DEFAULT_BASELINES)}), 'default' or 'none'"
            )
        with state.main_process_first():
            data = load_data(args)
        scores = data.images[["image_id", "source_id", "task", "model", "model_family", "human_score"]].copy()
        evaluators = Evaluators()
        if args.ckpt:
            options = runtime_options(args, device=process_device(args.device, state))
            llscore = score_with_llscore(
                args.ckpt, data.images, args.batch_size, options, zero_shot=args.zero_shot
            )
            scores[llscore.columns] = llscore.to_numpy()
            evaluators.scores["llscore"] = llscore["llscore"].to_numpy()
            evaluators.p_hallucination = llscore["p_hallucination"].to_numpy()
        if not state.is_main_process:
            end_processes()
            return 0  # the rivals, the baselines, the metrics and the report are the main process's alone
        for name, values in rival_scores(data).items():  # what LL-Score must beat (llscore/rivals.py)
            scores[name] = values
            evaluators.scores[name] = values
        if names:
            items = data.images[["image_id", "restored", "degraded", "reference"]]
            if data.full_reference:  # the input is the reference: full-reference metrics once, as m@ref
                items = items.assign(degraded=None)
            baselines = compute_baselines(items, names, args.cache_dir, device=args.device or "cpu")
            oriented = baselines.oriented().reindex(data.images["image_id"])
            for column in baselines.values.columns:
                if data.full_reference and column.endswith("@input"):
                    continue
                scores[column] = baselines.values[column].reindex(data.images["image_id"]).to_numpy()
                evaluators.scores[column] = oriented[column].to_numpy()
            evaluators.unavailable.update(baselines.unavailable)
        report = evaluate(data, evaluators, n_boot=args.bootstrap)
    except EXPECTED_ERRORS as err:
        return fail("eval.py", err, args.debug)
    except Exception as err:  # another process failed and said why: a broken collective here is no news
        return fail_after_peer(err, args.debug)
    report["wall_time_s"] = round(time.perf_counter() - start, 1)
    report["processes"] = state.num_processes
    model = args.ckpt or "baselines only"
    if args.ckpt:
        local = Path(args.ckpt).expanduser()
        report["llscore_model"] = {  # the folder, resolved, is what `llscore push --eval-dir` checks
            "ckpt": args.ckpt,
            "folder": str(local.resolve()) if local.is_dir() else None,
            "zero_shot": args.zero_shot,
            "backend": args.backend,  # both change the numbers: a bfloat16 or another runtime's result says so
            "dtype": args.dtype,
        }
        recorded = Path(args.ckpt) / TRAINING_DATA
        if recorded.is_file():
            report["llscore_model"]["training_data"] = json.loads(recorded.read_text())
        model += " (zero-shot)" if args.zero_shot else ""
    title = f"LL-Score evaluation: {model} on {data.prepared_dir} ({data.split})"
    try:
        written = write_outputs(args.out, report, scores, title)
    except EXPECTED_ERRORS as err:  # a full disk: one line, and the earlier report (if any) whole
        return fail("eval.py", err, args.debug)
    print(overall_table(report).to_string(index=False))
    for line in (unavailable_text(report), skipped_text(report)):
        if line:
            print(line)
    print(f"\nwrote {', '.join(p.name for p in written)} to {args.out} in {report['wall_time_s']} s")
    end_processes()
    return 0


if __name__ == "__main__":
    sys.exit(main())
