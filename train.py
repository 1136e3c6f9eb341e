"""Fine-tune a Qwen-VL model into LL-Score: the recipe, top to bottom (docs/training.md).

    accelerate launch train.py --config configs/llscore_qwen.yaml [--key value ...]

Any recipe key can be overridden: `--output_dir DIR`, `--max_steps N`, `--prepared_dir DIR`,
`--model_name_or_path PATH`, ... (a flat recipe parsed by HfArgumentParser: llscore/config.py).
"""

# ruff: noqa: E402  (the imports after the guard below)
import argparse
import sys

from llscore.hub_kernels import keep_bitsandbytes_off_the_hub

# first: transformers' Trainer, imported below, imports bitsandbytes, which would ask the Hub for a kernel
keep_bitsandbytes_off_the_hub()

from accelerate import PartialState
from transformers import set_seed

from llscore.config import TrainConfig, model_settings, warn_unused_loss_weights
from llscore.data.inputs import ensure_training_inputs
from llscore.data.prepared import load_prepared
from llscore.data.provenance import split_record
from llscore.errors import EXPECTED_ERRORS, add_debug_flag, fail, fail_after_peer, log_progress
from llscore.evaluation import rival_metrics, split_data
from llscore.hub import push_checkpoint
from llscore.modeling import load_for_training
from llscore.processes import end_processes, use_every_core_when_alone
from llscore.prompts import LLScoreConfig
from llscore.runs import check_output_dir, check_resume, claim_hub_push, save_run
from llscore.trainer import LLScoreTrainer
from llscore_sim.inputs import make_simulated_inputs
from llscore_sim.settings import load_config  # the library's recipe parser with the simulators' keys


def run(config: TrainConfig) -> dict[str, dict[str, float]]:
    """Inputs → model → trainer → validate → train → validate → save → push; returns the validations."""
    args = config.training  # LLScoreTrainingArguments: TrainingArguments + the loss weights and run settings
    warn_unused_loss_weights(config)  # e.g. --quality_kl under the head formulation
    resume = check_output_dir(args)  # never over an earlier run unless resuming or told to overwrite
    push_repo = claim_hub_push(args)  # a missing token fails now, not after training
    with PartialState().main_process_first():
        make_simulated_inputs(config)  # the embedded default: LL-Bench-mini and the tiny base, when missing
        ensure_training_inputs(config)  # data_prep: the prepared dataset
    prepared = load_prepared(config.data.prepared_dir)
    train_pairs = prepared.training_pairs()  # one example = one human-compared pair of restorations
    val_split = split_data(prepared, "val", config.data.max_val_images)  # scored as eval.py scores
    llscore_config = LLScoreConfig(
        resolution=config.resolution,
        base_model=config.model.model_name_or_path,
        formulation=config.model.formulation,  # levels (answer words) or heads (<QUAL>/<HAL>): docs/training.md
    )
    prepared.check_contract(llscore_config.prompts.level_words, llscore_config.prompts.level_weights)
    shape = model_settings(config)  # LoRA, frozen parts, quantisation: recorded in each checkpoint
    check_resume(resume, llscore_config, args, shape)  # the same model, contract, resolution and shape
    set_seed(args.seed)  # before loading: new heads, token rows and LoRA weights are drawn at load time
    model, processor = load_for_training(
        config.model, config.lora, llscore_config, activation_checkpointing=args.activation_checkpointing
    )
    trainer = LLScoreTrainer(
        model=model,
        args=args,
        train_dataset=train_pairs,  # LLScoreTrainer builds its own collator from args and the processor
        processing_class=processor,
        llscore_config=llscore_config,
        val_split=val_split,
        model_settings=shape,
    )

    report = {}
    if trainer.is_world_process_zero():
        report["rivals"] = rival_metrics(
            val_split, progress=False
        )  # what LL-Score must beat on the same split
    if args.validate_before_training and resume is None:
        report["before"] = trainer.evaluate(metric_key_prefix="val")
    trainer.train(resume_from_checkpoint=resume)
    report["after"] = trainer.evaluate(metric_key_prefix="val")
    save_run(
        trainer, report, {"train": split_record(prepared.report, "train"), "validation": val_split.record}
    )
    if push_repo and trainer.is_world_process_zero():
        report["pushed"] = push_checkpoint(
            args.output_dir,
            push_repo,
            merge=args.push_merged,
            private=bool(args.hub_private_repo),
            base_repo_id=args.push_base_repo_id,
        )
    return report


def main(argv=None) -> int:
    parser = (
        argparse.ArgumentParser(  # no prefix matching: `--de` is not `--debug`, as in the recipe's parser
            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
        )
    )
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. configs/llscore_tiny.yaml")
    add_debug_flag(parser)
    args, overrides = parser.parse_known_args(argv)
    try:
        config = load_config(args.config, overrides)  # builds TrainingArguments, which sets up the processes
        main_process = config.training.process_index == 0
        use_every_core_when_alone(PartialState())  # accelerate gives a lone CPU process one thread
        log_progress(main_process)
        report = run(config)
    except EXPECTED_ERRORS as err:
        return fail("train.py", err, args.debug)
    except Exception as err:  # another process failed and said why: a broken collective here is no news
        return fail_after_peer(err, args.debug)
    if main_process:
        for stage in ("before", "after"):
            if stage in report:
                values = ", ".join(f"{k.removeprefix('val_')}={v:.4f}" for k, v in report[stage].items())
                print(f"[llscore] validation {stage} training: {values}")
        for name, values in report.get("rivals", {}).items():
            print(
                f"[llscore] validation, rival {name}: " + ", ".join(f"{k}={v:.4f}" for k, v in values.items())
            )
        print(f"[llscore] saved LL-Score checkpoint to {config.training.output_dir}")
        if "pushed" in report:
            print(f"[llscore] pushed to the Hub: {report['pushed']}")
    end_processes()
    return 0


if __name__ == "__main__":
    sys.exit(main())
