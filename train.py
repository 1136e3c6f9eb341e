"""Fine-tune a Qwen-VL model into LL-Score: the recipe, top to bottom (docs/training.md).

    accelerate launch train.py --config configs/llscore_qwen.yaml [--key value ...]

Any config key can be overridden: `--output_dir DIR`, `--max_steps N`, `--data.prepared_dir DIR`,
`--model.model_name_or_path PATH`, ... (see llscore/config.py).
"""

import argparse
import sys

from accelerate import PartialState

from llscore.config import ConfigError, TrainConfig, load_config
from llscore.data.inputs import ensure_training_inputs
from llscore.data.prepared import load_prepared
from llscore.data.tables import DataError
from llscore.errors import add_debug_flag, fail, log_progress
from llscore.hub import HubError, push_checkpoint
from llscore.modeling import CheckpointError, load_for_training
from llscore.prompts import LLScoreConfig
from llscore.trainer import check_output_dir, claim_hub_push, make_trainer, save_run, training_pairs


def run(config: TrainConfig) -> dict[str, dict[str, float]]:
    """Inputs → model → trainer → validate → train → validate → save → push; returns the validations."""
    resume = check_output_dir(config)  # never over an earlier run unless resuming or told to overwrite
    push_repo = claim_hub_push(config)  # a missing token fails now, not after training
    with PartialState().main_process_first():
        ensure_training_inputs(config)  # data_prep: LL-Bench-mini, the prepared dataset, the tiny base
    prepared = load_prepared(config.data.prepared_dir)
    train_pairs = training_pairs(prepared)
    llscore_config = LLScoreConfig(resolution=config.resolution, base_model=config.model.model_name_or_path)
    prepared.check_contract(llscore_config.prompts.level_words, llscore_config.prompts.level_weights)
    model, processor = load_for_training(config.model, config.lora, llscore_config)
    trainer = make_trainer(config, model, processor, llscore_config, prepared, train_pairs)

    report = {}
    if config.run.validate_before_training and resume is None:
        report["before"] = trainer.evaluate(metric_key_prefix="val")
    trainer.train(resume_from_checkpoint=resume)
    report["after"] = trainer.evaluate(metric_key_prefix="val")
    save_run(trainer, report)
    if push_repo and trainer.is_world_process_zero():
        report["pushed"] = push_checkpoint(
            config.training.output_dir,
            push_repo,
            merge=config.run.push_merged,
            private=bool(config.training.hub_private_repo),
            base_repo_id=config.run.push_base_repo_id,
        )
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. configs/llscore_tiny.yaml")
    add_debug_flag(parser)
    args, overrides = parser.parse_known_args(argv)
    try:
        config = load_config(args.config, overrides)  # builds TrainingArguments, which sets up the processes
        main_process = config.training.process_index == 0
        log_progress(main_process)
        report = run(config)
    except (CheckpointError, ConfigError, DataError, FileExistsError, FileNotFoundError, HubError) as err:
        return fail("train.py", err, args.debug)
    if main_process:
        for stage in ("before", "after"):
            if stage in report:
                values = ", ".join(f"{k.removeprefix('val_')}={v:.4f}" for k, v in report[stage].items())
                print(f"[llscore] validation {stage} training: {values}")
        print(f"[llscore] saved LL-Score checkpoint to {config.training.output_dir}")
        if "pushed" in report:
            print(f"[llscore] pushed to the Hub: {report['pushed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
