"""A run folder's lifecycle around `LLScoreTrainer`: never train over an earlier run, claim the Hub push before
training, save the final model with its validations (docs/training.md)."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from accelerate import PartialState
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from llscore.config import TRAINING_SETTINGS, LLScoreTrainingArguments, training_settings
from llscore.data.provenance import TRAINING_DATA
from llscore.errors import ConfigError
from llscore.files import claim_folder, write_atomic
from llscore.modeling import ADAPTER_CONFIG_NAME, read_llscore_config
from llscore.prompts import LLScoreConfig

logger = logging.getLogger(__name__)

VALIDATION_REPORT = "validation.json"
"""Written into the run folder by `save_run`: the validation before and after training (bench/learning_curve.py)."""


def check_output_dir(args: LLScoreTrainingArguments) -> str | None:
    """The checkpoint to resume from (None for a new run), after refusing to train over an earlier run.

    A run never replaces what is already in its `output_dir` unless it resumes from a checkpoint inside it or
    `overwrite_output_dir` says so (the earlier run's checkpoint-N folders are then removed, so that a later
    `resume_from_checkpoint: true` cannot pick one of them). Resuming needs a complete checkpoint folder;
    `true` means the latest one in `output_dir`, `false` none.
    """
    out = Path(args.output_dir).expanduser()
    resume = args.resume_from_checkpoint
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {out} is a file")
    if PartialState().is_main_process:
        claim_folder(out, "train.py")  # a second run into this folder fails now, naming this one
    if resume is not None and str(resume).lower() in ("false", "no", "0", ""):
        resume = None
    if resume is not None and str(resume).lower() in ("true", "yes", "1"):
        resume = last_complete_checkpoint(out)
    elif resume is not None:
        problem = incomplete(Path(resume).expanduser())
        if problem:
            raise ConfigError(f"cannot resume from {resume}: {problem}")
    if resume is not None:
        progress = json.loads((Path(resume).expanduser() / "trainer_state.json").read_text())
        check_unfinished(resume, progress, args)
    inside = resume is not None and out.resolve() in Path(resume).expanduser().resolve().parents
    if out.is_dir() and any(out.iterdir()) and not inside:
        if not args.overwrite_output_dir:
            found = sorted(p.name for p in out.iterdir())
            listed = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
            raise ConfigError(
                f"output_dir {out} already holds a run ({listed}); resume it with --resume_from_checkpoint "
                "true, train over it with --overwrite_output_dir true, or choose another --output_dir"
            )
        if PartialState().is_main_process:
            for old in sorted(out.glob(f"{PREFIX_CHECKPOINT_DIR}-*")):
                logger.warning("--overwrite_output_dir: removing the earlier run's %s", old)
                shutil.rmtree(old)
    return None if resume is None else str(resume)


def check_unfinished(resume: str, progress: dict, args: LLScoreTrainingArguments) -> None:
    """A checkpoint at the run's last step is a finished run: resuming it trained one step past max_steps and
    checkpoint rotation then deleted the last checkpoint. Refused; a longer run (a larger max_steps, or more
    epochs) resumes."""
    if not isinstance(progress, dict):
        return
    step = progress.get("global_step") or 0
    if args.max_steps > 0:
        last, setting = args.max_steps, f"max_steps {args.max_steps}"
    elif progress.get("num_train_epochs") == args.num_train_epochs and progress.get("max_steps"):
        last, setting = progress["max_steps"], f"num_train_epochs {args.num_train_epochs:g}"
    else:
        return
    if step >= last:
        raise ConfigError(
            f"cannot resume from {resume}: the run is finished (step {step} of {last}, {setting}); to train "
            f"on, raise --{setting.split()[0]}"
        )


def incomplete(checkpoint: Path) -> str | None:
    """What shows that `checkpoint` was not saved whole (a save cut short by kill -9: its trainer_state.json, which
    Trainer writes after the weights, missing or damaged, or an empty file), or None."""
    state = checkpoint / "trainer_state.json"
    if not checkpoint.is_dir():
        return "no such folder"
    if not state.is_file():
        return "it has no trainer_state.json (cut short?)"
    try:
        json.loads(state.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return f"{state.name} is damaged (cut short?): {err}"
    empty = sorted(p.name for p in checkpoint.iterdir() if p.is_file() and p.stat().st_size == 0)
    return f"{empty[0]} is empty (cut short?)" if empty else None


def last_complete_checkpoint(out: Path) -> str:
    """`--resume_from_checkpoint true`: the latest checkpoint-N in `out` saved whole; the ones cut short after it
    are skipped with a warning naming why, and the one used is logged."""
    pattern = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)")
    found = sorted(
        (p for p in out.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.is_dir() and pattern.fullmatch(p.name)),
        key=lambda p: int(p.name.rsplit("-", 1)[1]),
        reverse=True,
    )
    skipped = []
    for checkpoint in found:
        problem = incomplete(checkpoint)
        if problem is None:
            logger.info("resuming from %s", checkpoint)
            return str(checkpoint)
        logger.warning("skipping %s: %s", checkpoint, problem)
        skipped.append(f"{checkpoint.name}: {problem}")
    missing = (
        f"complete checkpoint-N folder in {out} ({'; '.join(skipped)})"
        if skipped
        else f"checkpoint-N folder in {out}"
    )
    raise ConfigError(f"--resume_from_checkpoint true: no {missing}")


def save_run(trainer: Trainer, report: dict, training_data: dict) -> None:
    """The final model with its contract, trainer_state.json (the logged losses and validations),
    validation.json (before / after, as bench/learning_curve.py reads them) and training_data.json (the records
    of the data it was trained and validated on, which the model card is written from)."""
    out = trainer.args.output_dir
    trainer.save_model(out)
    trainer.save_state()
    if trainer.is_world_process_zero():
        write_atomic(Path(out) / VALIDATION_REPORT, json.dumps(report, indent=2))
        write_atomic(Path(out) / TRAINING_DATA, json.dumps(training_data, indent=2))


def claim_hub_push(args: LLScoreTrainingArguments) -> str | None:
    """Check the Hub settings before training (a missing token fails now, not after hours) and take the push
    away from `Trainer`, which would otherwise create the repo at start and push every checkpoint."""
    if not args.push_to_hub:
        return None
    from llscore.hub import check_push_access

    repo = args.hub_model_id
    if not repo or "/" not in repo:
        raise ConfigError(f"push_to_hub needs hub_model_id as USER/NAME, got {repo!r}")
    check_push_access(repo)
    args.push_to_hub = False
    return repo


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _same_folder(value):
    """A base model that is a local folder, as its resolved path: `../base` and `/abs/base` are one model."""
    if isinstance(value, str) and Path(value).expanduser().is_dir():
        return str(Path(value).expanduser().resolve())
    return value


def _recorded_shape(resume: str, recorded: dict) -> dict:
    """The model settings `resume` was trained with: its record, else (a checkpoint from before the record)
    what its adapter_config.json says."""
    if "model" in recorded:
        return recorded["model"]
    adapter = Path(resume) / ADAPTER_CONFIG_NAME
    if not adapter.is_file():
        return {"use_lora": False}
    try:
        peft = json.loads(adapter.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot resume from {resume}: {adapter.name} is damaged: {err}") from None
    return {"use_lora": True, "lora_r": peft.get("r"), "lora_alpha": peft.get("lora_alpha")}


def check_resume(
    resume: str | None,
    llscore_config: LLScoreConfig,
    args: LLScoreTrainingArguments,
    shape: dict | None = None,
) -> None:
    """Resuming continues the same run: another base model, prompt contract or resolution rule than the
    checkpoint's is refused (the saved contract would describe a model it did not train), and so are other model
    settings (`shape`, `llscore.config.model_settings`: LoRA, frozen parts, quantisation), whose weights and
    optimizer state would not fit; changed training settings are named in a warning, since a deliberate change
    (a longer run, say) is legitimate."""
    if resume is None:
        return
    saved = read_llscore_config(resume)
    if saved is not None:
        before, now = _flat(saved.to_dict()), _flat(llscore_config.to_dict())
        for flat in (before, now):
            flat["base_model"] = _same_folder(flat.get("base_model"))
        changed = [
            f"{k} {before.get(k)!r} -> {now.get(k)!r}"
            for k in sorted(before | now)
            if before.get(k) != now.get(k)
        ]
        if changed:
            raise ConfigError(
                f"cannot resume from {resume} with another base model, prompt contract or resolution "
                f"({'; '.join(changed[:3])}{'; ...' if len(changed) > 3 else ''}): resume with the run's own "
                "recipe, or start a new run in another --output_dir"
            )
    file = Path(resume) / TRAINING_SETTINGS
    try:
        recorded = json.loads(file.read_text()) if file.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"cannot resume from {resume}: {file.name} is damaged (cut short?): {err}"
        ) from None
    if not isinstance(recorded, dict):
        raise ConfigError(f"cannot resume from {resume}: {file.name} is not a mapping of settings")
    if shape is not None:
        before = _recorded_shape(resume, recorded)
        changed = [
            f"{k} {before[k]!r} -> {shape[k]!r}" for k in before if k in shape and before[k] != shape[k]
        ]
        if changed:
            raise ConfigError(
                f"cannot resume from {resume} with other model settings ({'; '.join(changed)}): its weights and "
                "optimizer state have another shape; resume with the run's own settings, or start a new run in "
                "another --output_dir"
            )
    if recorded:
        before, now = recorded, training_settings(args)
        changed = [f"{k} {before[k]!r} -> {now[k]!r}" for k in now if k in before and before[k] != now[k]]
        if changed:
            logger.warning("resuming %s with changed training settings: %s", resume, "; ".join(changed))
