"""Push an LL-Score checkpoint to the Hugging Face Hub with a generated model card (the card: llscore/model_card.py).

`push_checkpoint` uploads either the LoRA adapter as is (`LLScore.from_pretrained(repo_id)` loads its base by the
Hub id stored in `llscore_config.json`) or, with `merge=True`, the adapter merged into its base: a plain checkpoint
that `AutoModelForImageTextToText` / `AutoProcessor` load without `trust_remote_code`. Either way the push writes
safetensors weights, the processor, `llscore_config.json` and a README.md model card; every other file of the
repo stays, except the weight files of the other layout (`WEIGHT_FILES`), which loaders would pick up. No
pushed file names a path of this machine (`without_local_paths`).

The token and endpoint follow `huggingface_hub`: the `token` argument, else `HF_TOKEN` or the saved login; the
`endpoint` argument, else `HF_ENDPOINT`. The token is only handed to `HfApi`, never printed or logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import tempfile
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import (
    CommitInfo,
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    get_token,
)
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from llscore.data.provenance import TRAINING_DATA
from llscore.errors import CheckpointError, HubError, reason
from llscore.formulations import OWN_FILES
from llscore.model_card import LL_BENCH_LICENSE, model_card
from llscore.modeling import (
    ADAPTER_CONFIG_NAME,
    DTYPES,
    LLSCORE_CONFIG_NAME,
    load_checkpoint,
    read_llscore_config,
    save_checkpoint,
)
from llscore.prompts import LLScoreConfig

logger = logging.getLogger(__name__)

CHECKPOINT_FILES = (
    # weights (transformers, peft, LL-Score's heads) and the model's configs
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    "adapter_config.json",
    *OWN_FILES,
    "config.json",
    "generation_config.json",
    # the processor: image processor, tokenizer, chat template
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    # LL-Score's contract and train.py's records of the run (no paths, no tokens)
    "llscore_config.json",
    "training_data.json",
    "training_settings.json",
    "trainer_state.json",
    "validation.json",
)
"""The files of a checkpoint that a push uploads, by name: a folder's other files (notes, a hidden token file,
training_args.bin's pickle) never leave the disk."""
TRAINER_STATE = "trainer_state.json"


def resolve_token(token: str | None = None) -> str:
    """The token to push with (argument, else HF_TOKEN or the saved login); a clear error when there is none.

    Callers that push at the end of a long job (train.py) call this first, so a missing token fails at start.
    """
    token = token or get_token()
    if not token:
        raise HubError(
            "no Hugging Face token: set HF_TOKEN (a token with write access) or run `hf auth login`; "
            "nothing was uploaded"
        )
    return token


def check_push_access(repo_id: str, token: str | None = None, endpoint: str | None = None) -> None:
    """Before a long job that pushes at its end: the token must be valid, allowed to write, and its owner (or one
    of its organisations) must own `repo_id`'s namespace; otherwise one `HubError` now, not after training."""
    token = resolve_token(token)
    try:
        identity = HfApi(endpoint=endpoint, token=token).whoami()
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        raise HubError(
            f"the Hugging Face token cannot be used to push to {repo_id} (HTTP {status}: invalid or expired "
            "token): set HF_TOKEN to a token with write access, or run `hf auth login`"
        ) from None
    except Exception as err:  # connection refused (from whichever HTTP library), offline mode, ...
        if not (is_transport_error(err) or isinstance(err, ValueError)):
            raise
        raise HubError(
            f"cannot reach the Hugging Face Hub to check the token for {repo_id}: {reason(err)}"
        ) from None
    role = identity.get("auth", {}).get("accessToken", {}).get("role")
    if role == "read":
        raise HubError(
            f"the Hugging Face token is read-only: pushing to {repo_id} needs a token with write access"
        )
    owners = {identity.get("name"), *(org.get("name") for org in identity.get("orgs", []))}
    namespace = repo_id.split("/")[0]
    if namespace not in owners:
        raise HubError(
            f"the Hugging Face token belongs to {identity.get('name')!r}, which cannot create {repo_id}: "
            f"its namespaces are {sorted(o for o in owners if o)}"
        )


def _is_repo_id(name: str) -> bool:
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def hub_base_model(ckpt: Path, config: LLScoreConfig, base_repo_id: str | None, required: bool) -> str | None:
    """The base model as a Hub id: `base_repo_id`, else the recorded base when it is not a local path.

    A pushed adapter stores this id so that any machine can resolve its base; a merged checkpoint only names
    it in the card. A local path is never published.
    """
    if base_repo_id:
        validate_repo_id(base_repo_id)
        return base_repo_id
    adapter_config = ckpt / ADAPTER_CONFIG_NAME
    recorded = config.base_model or (
        json.loads(adapter_config.read_text()).get("base_model_name_or_path")
        if adapter_config.is_file()
        else None
    )
    if recorded and not Path(recorded).exists() and _is_repo_id(recorded):
        return recorded
    if required:
        raise HubError(
            f"{ckpt}: the adapter's base model {recorded!r} is not a Hub id that a downloader can resolve; "
            "pass --base-repo-id with the base's Hub id (upload the base there first if it is not on the Hub), "
            "or push with --merge"
        )
    return None


def read_metrics(eval_dir: str | Path) -> dict:
    """eval.py's metrics.json, checked to hold LL-Score's overall results."""
    path = Path(eval_dir) / "metrics.json"
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise HubError(f"{path}: no such file; --eval-dir must be an output folder of eval.py") from err
    except json.JSONDecodeError as err:
        raise HubError(f"{path}: not valid JSON ({err})") from err
    llscore = report.get("overall", {}).get("llscore")
    if not isinstance(llscore, dict) or "srcc" not in llscore:
        raise HubError(
            f"{path}: no LL-Score results under overall.llscore (found {sorted(report.get('overall', {}))})"
        )
    return report


EVALUATE_THIS = "its numbers would go on this checkpoint's card: run eval.py --ckpt on this one, or push without --eval-dir"


def check_evaluated(report: dict, metrics: Path, ckpt: Path, repo_id: str) -> None:
    """The report must be an evaluation of `ckpt` (compared as resolved folders), or of `repo_id` itself on the
    Hub: another checkpoint's numbers would go on this one's card. A report that does not name its checkpoint,
    or names a folder absent here (evaluated on another machine), cannot be checked: a warning says so."""
    model = report.get("llscore_model") or {}
    name = model.get("ckpt")
    # eval.py records the folder it resolved, None for a Hub id; an older report has the name as given only
    folder = model.get("folder", name)
    if folder is None and name is not None:
        if name != repo_id:
            raise HubError(f"{metrics}: an evaluation of {name}, not of {ckpt}; {EVALUATE_THIS}")
        return
    if folder is None or not Path(folder).expanduser().is_dir():
        logger.warning("%s: cannot tell which checkpoint it evaluated (%s); not checked", metrics, name)
        return
    if Path(folder).expanduser().resolve() != ckpt.resolve():
        named = name if folder == name else f"{name} ({folder})"
        raise HubError(f"{metrics}: an evaluation of {named}, not of {ckpt}; {EVALUATE_THIS}")


def training_data(ckpt: Path, declared: str | None) -> dict | None:
    """The checkpoint's training_data.json (train.py writes it); `declared` names the data of a checkpoint
    that has none (trained elsewhere), and is refused where the checkpoint records its own."""
    path = ckpt / TRAINING_DATA
    if path.is_file():
        recorded = json.loads(path.read_text())
        if declared is not None and declared not in (
            recorded["train"]["name"],
            recorded["train"].get("hub_id"),
        ):
            raise HubError(
                f"{path} records training on {recorded['train']['name']}; --dataset {declared} would contradict "
                "it in the model card: drop --dataset"
            )
        return recorded
    if declared is None:
        return None
    return {"train": {"name": declared, "hub_id": declared if "/" in declared else None, "declared": True}}


def checkpoint_files(ckpt: Path) -> dict[str, Path]:
    """The checkpoint's own top-level files (`CHECKPOINT_FILES`), which go to the Hub; the others are named in a
    warning. Refuses weights that are not safetensors."""
    files, left = {}, []
    for path in sorted(ckpt.iterdir()):
        if path.is_file() and any(fnmatch(path.name, name) for name in CHECKPOINT_FILES):
            files[path.name] = path
        elif path.name != "README.md":  # the card is generated
            left.append(path.name + ("/" if path.is_dir() else ""))
    if left:
        logger.warning("not pushed from %s (not files of an LL-Score checkpoint): %s", ckpt, ", ".join(left))
    if not any(name.endswith(".safetensors") for name in files):
        raise HubError(
            f"{ckpt}: no .safetensors weights; LL-Score pushes safetensors only "
            "(re-save the checkpoint with save_pretrained(..., safe_serialization=True))"
        )
    return files


def _best_checkpoint_relative(state: bytes, ckpt: Path) -> bytes:
    """trainer_state.json with `best_model_checkpoint` (Trainer writes an absolute path) relative to `ckpt`: a
    folder inside it or a sibling (another checkpoint of the run); any other folder is dropped (null)."""
    try:
        parsed = json.loads(state)
    except json.JSONDecodeError as err:
        raise HubError(f"{ckpt / TRAINER_STATE}: not valid JSON ({err})") from err
    best = parsed.get("best_model_checkpoint")
    if best is None or not Path(best).is_absolute():
        return state
    best, here = Path(best).resolve(), ckpt.resolve()
    parsed["best_model_checkpoint"] = (
        os.path.relpath(best, here) if best.is_relative_to(here.parent) else None
    )
    return (json.dumps(parsed, indent=2, sort_keys=True) + "\n").encode()


def without_local_paths(
    files: dict[str, Path | bytes], ckpt: Path, *folders: Path
) -> dict[str, Path | bytes]:
    """The upload with trainer_state.json's best checkpoint made relative (the file on disk stays as it is);
    refuses any other file (all but the safetensors weights are text) that names the checkpoint, `folders` or
    the home directory: a pushed file must not carry a path of this machine."""
    home = Path(os.path.expanduser("~"))
    local = {str(f) for folder in (ckpt, *folders) for f in (folder.absolute(), folder.resolve())}
    local |= {str(home)} if home.is_absolute() and len(home.parts) > 1 else set()
    names = "|".join(re.escape(path) for path in sorted(local, key=len, reverse=True))
    pattern = re.compile(f"(?:{names})(?![\\w.-])")  # a whole folder name: /home/al is not in /home/alice
    upload = {}
    for name, content in files.items():
        if not name.endswith(".safetensors"):
            text = content.read_bytes() if isinstance(content, Path) else content
            if name == TRAINER_STATE:
                content = text = _best_checkpoint_relative(text, ckpt)
            found = pattern.search(text.decode("utf-8", errors="replace"))
            if found:
                raise HubError(
                    f"{name} (pushed from {ckpt}) holds the local path {found[0]}; a pushed file must not name "
                    "a folder of this machine: remove it and push again"
                )
        upload[name] = content
    return upload


def merged_files(ckpt: Path, out: Path, dtype: str) -> dict[str, Path]:
    """Merge the adapter into its base in float32, cast to `dtype`, save as a plain checkpoint in `out`."""
    model, processor, config = load_checkpoint(ckpt)
    merged = model.merge_and_unload().to(DTYPES[dtype])
    return checkpoint_files(save_checkpoint(merged, processor, config, out))


TRANSPORTS = {"httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3"}


def is_transport_error(err: BaseException) -> bool:
    """A connection failure (no network, refused, timed out), whichever HTTP library the Hub client uses."""
    return isinstance(err, OSError) or any(
        cls.__module__.split(".")[0] in TRANSPORTS for cls in type(err).__mro__
    )


WEIGHT_FILES = (
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    "adapter_config.json",
)
"""The transformers / peft weight files that a push of the other layout replaces (`stale_weight_files`)."""


def stale_weight_files(existing: list[str], uploading: dict) -> list[str]:
    """The repo's top-level weight files that this upload does not overwrite; nothing else is ever removed."""
    return sorted(
        name
        for name in existing
        if "/" not in name and name not in uploading and any(fnmatch(name, p) for p in WEIGHT_FILES)
    )


def push_checkpoint(
    ckpt_dir: str | Path,
    repo_id: str,
    merge: bool = False,
    private: bool = False,
    eval_dir: str | Path | None = None,
    base_repo_id: str | None = None,
    dataset: str | None = None,
    license: str = LL_BENCH_LICENSE,
    dtype: str = "float32",
    token: str | None = None,
    endpoint: str | None = None,
) -> CommitInfo:
    """Create `repo_id` if needed and upload this checkpoint into it; returns the commit URL. The model card
    names the data in the checkpoint's training_data.json (`dataset` only declares it for a checkpoint without).

    Only the files it uploads change (weights, processor files, `llscore_config.json`, the model card
    `README.md`); every other file of the repo stays. The one exception: top-level weight files of another
    layout (an adapter's after a merged push, or the reverse) are removed, with a logged warning first,
    since loaders would pick them up. Everything that can fail locally (token, checkpoint, metrics, base id,
    merge) fails before any request. The returned `CommitInfo` is the commit URL (a `str`) with its `oid`.
    """
    token = resolve_token(token)
    validate_repo_id(repo_id)
    ckpt = Path(ckpt_dir)
    if not ckpt.is_dir():
        raise HubError(f"{ckpt}: not a checkpoint directory")
    config = read_llscore_config(ckpt)
    if config is None:
        raise CheckpointError(f"{ckpt}: no {LLSCORE_CONFIG_NAME}; this is not an LL-Score checkpoint")
    report = read_metrics(eval_dir) if eval_dir is not None else None
    if report is not None:
        check_evaluated(report, Path(eval_dir) / "metrics.json", ckpt, repo_id)
    training = training_data(ckpt, dataset)
    has_adapter = (ckpt / ADAPTER_CONFIG_NAME).is_file()
    adapter = has_adapter and not merge
    base = hub_base_model(ckpt, config, base_repo_id, required=adapter)
    with tempfile.TemporaryDirectory(prefix="llscore-push-") as tmp:
        merging = has_adapter and merge
        files: dict[str, Path | bytes] = (
            merged_files(ckpt, Path(tmp), dtype) if merging else checkpoint_files(ckpt)
        )
        files[LLSCORE_CONFIG_NAME] = (
            json.dumps(dataclasses.replace(config, base_model=base).to_dict(), indent=2) + "\n"
        ).encode()
        if adapter:
            adapter_config = json.loads((ckpt / ADAPTER_CONFIG_NAME).read_text())
            files[ADAPTER_CONFIG_NAME] = (
                json.dumps({**adapter_config, "base_model_name_or_path": base}, indent=2) + "\n"
            ).encode()
        files["README.md"] = model_card(
            repo_id, config, adapter, base, report, training, license
        ).content.encode()
        files = without_local_paths(files, ckpt, Path(tmp))
        api = HfApi(endpoint=endpoint, token=token)
        with hub_errors(f"pushing {ckpt} to {repo_id}", api):
            api.create_repo(repo_id, private=private, exist_ok=True)
            stale = stale_weight_files(api.list_repo_files(repo_id), files)
            for name in stale:
                logger.warning(
                    "removing %s from %s: weights of another format would shadow these", name, repo_id
                )
            operations = [CommitOperationAdd(name, content) for name, content in files.items()]
            operations += [CommitOperationDelete(name) for name in sorted(stale)]
            what = "LoRA adapter" if adapter else "checkpoint"
            return api.create_commit(repo_id, operations, commit_message=f"Upload LL-Score {what}")


@contextlib.contextmanager
def hub_errors(doing: str, api: HfApi):
    """The Hub's refusals and an unreachable Hub as one-line `HubError`s saying what was being done."""
    try:
        yield
    except HfHubHTTPError as err:
        raise HubError(f"{doing} on {api.endpoint} failed: {err}") from err
    except Exception as err:
        if not is_transport_error(err):
            raise
        raise HubError(f"{doing}: cannot reach {api.endpoint} ({reason(err)}); nothing was uploaded") from err
