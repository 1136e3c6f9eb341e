"""`llscore push --space`: the demo page (llscore/demo.py) as a Hugging Face Space that loads the pushed evaluator
by its Hub id (docs/demo.md).

The Space holds an `app.py` that downloads the model repo at the pushed commit and builds the same page as
`llscore demo`, this package's sources (LL-Score is not on PyPI, so the Space carries the code it was pushed
with), a `requirements.txt` pinning what the page imports at the versions installed here (`SPACE_REQUIREMENTS`,
checked against the app's real imports by tests/test_demo.py), the examples with their human scores, and a README
with the Space's settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi
from huggingface_hub.utils import validate_repo_id

from llscore.demo import Example, write_examples
from llscore.errors import HubError
from llscore.hub import hub_errors, resolve_token

logger = logging.getLogger(__name__)

SPACE_REQUIREMENTS = (
    "torch",
    "torchvision",
    "transformers",
    "tokenizers",
    "safetensors",
    "huggingface-hub",
    "accelerate",
    "peft",
    "numpy",
    "scipy",
    "pandas",
    "matplotlib",
    "pillow",
    "pyyaml",
    "tqdm",
    "gradio",
)
"""The distributions the Space's page imports, pinned in its requirements.txt."""

GPU_WEIGHTS_BYTES = 2 * 1024**3
"""Weights above this size (a 3B or 7B model) suggest a GPU Space; below it the free CPU one scores in seconds."""

APP = '''"""LL-Score's demo page as a Hub Space, written by `llscore push --space` (docs/demo.md in LL-Score's
repository): the evaluator {model_id} at commit {revision}, loaded by its Hub id."""

from pathlib import Path

import torch
from huggingface_hub import snapshot_download

from llscore.demo import build_page, examples_from_folder
from llscore.reward import LLScoreReward

MODEL_ID = {model_id!r}
REVISION = {revision!r}
HALLUCINATION_WEIGHT = {hallucination_weight!r}

folder = snapshot_download(MODEL_ID, revision=REVISION)
dtype = "bfloat16" if torch.cuda.is_available() else "float32"
reward = LLScoreReward.from_pretrained(folder, HALLUCINATION_WEIGHT, dtype=dtype)
examples = examples_from_folder(Path(__file__).parent / "examples")
page = build_page(reward, f"{{MODEL_ID}}@{{REVISION[:8]}}", folder, examples)

if __name__ == "__main__":
    page.launch()
'''


def pinned(distribution: str) -> str:
    """`name==version` as installed here (a local build tag such as +cpu dropped: the Hub installs from PyPI)."""
    try:
        return f"{distribution}=={version(distribution).split('+')[0]}"
    except PackageNotFoundError as err:
        raise HubError(f"the Space needs {distribution}, which is not installed here") from err


def space_card(model_id: str, license: str, weights_bytes: int) -> str:
    """The Space's README: its settings (Gradio at the version here, the app, the model it loads, suggested
    hardware) and one paragraph."""
    hardware = "a10g-small" if weights_bytes > GPU_WEIGHTS_BYTES else "cpu-basic"
    return (
        "---\n"
        "title: LL-Score\n"
        "sdk: gradio\n"
        f"sdk_version: {version('gradio')}\n"
        'python_version: "3.11"\n'
        "app_file: app.py\n"
        f"models:\n  - {model_id}\n"
        f"license: {license}\n"
        f"suggested_hardware: {hardware}\n"
        "short_description: Rank restorations of an image by LL-Score\n"
        "---\n\n"
        f"# LL-Score: judge restorations by eye\n\nDrop a degraded image and its restorations: the evaluator "
        f"[{model_id}](https://huggingface.co/{model_id}) ranks them by quality, with P(hallucination), the "
        "reward and P(A better than B) between every two. The examples are LL-Bench-mini test photographs, "
        "with the humans' scores beside LL-Score's.\n"
    )


def package_sources() -> dict[str, Path]:
    """This package's files as the Space's `llscore/` folder: its modules and templates, no caches."""
    root = Path(__file__).resolve().parent
    return {
        f"llscore/{path.relative_to(root).as_posix()}": path
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".md", ".json")
    }


@dataclass(frozen=True)
class SpacePage:
    """What a Space shows: the evaluator `model_id` at commit `revision`, the examples, the reward's λ, the
    weights' licence and size (for the suggested hardware)."""

    model_id: str
    revision: str
    examples: list[Example] = field(default_factory=list)
    hallucination_weight: float = 1.0
    license: str = "cc-by-nc-4.0"
    weights_bytes: int = 0

    def files(self) -> dict[str, Path | bytes]:
        """Every file of the Space, by its path there."""
        app = APP.format(
            model_id=self.model_id,
            revision=self.revision,
            hallucination_weight=float(self.hallucination_weight),
        )
        requirements = "".join(f"{pinned(name)}\n" for name in SPACE_REQUIREMENTS)
        files: dict[str, Path | bytes] = {
            "app.py": app.encode(),
            "requirements.txt": requirements.encode(),
            "README.md": space_card(self.model_id, self.license, self.weights_bytes).encode(),
            **package_sources(),
        }
        files.update({f"examples/{name}": content for name, content in write_examples(self.examples).items()})
        return files


def push_space(
    space_id: str,
    page: SpacePage,
    private: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
) -> CommitInfo:
    """Create the Gradio Space `space_id` if needed and upload `page` into it; the Space's other files stay."""
    token = resolve_token(token)
    validate_repo_id(space_id)
    files = page.files()
    api = HfApi(endpoint=endpoint, token=token)
    with hub_errors(f"pushing the demo Space {space_id}", api):
        api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        operations = [CommitOperationAdd(name, content) for name, content in files.items()]
        info = api.create_commit(
            space_id, operations, repo_type="space", commit_message=f"LL-Score demo of {page.model_id}"
        )
    logger.info(
        "pushed the demo Space %s: %d files, the page of %s@%s",
        space_id,
        len(files),
        page.model_id,
        page.revision,
    )
    return info
