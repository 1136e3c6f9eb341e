"""The prompt and answer contract: the one place that says what LL-Score asks and which tokens it reads.

Training, evaluation, inference and reward all build their inputs from a `PromptContract`; a checkpoint stores
the contract it was trained with in `llscore_config.json`, and loading the checkpoint restores it.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field

QUALITY_QUESTIONS = (
    "How would you rate the quality of the restored image?",
    "Rate the overall quality of the restored image compared with what the degraded input shows.",
    "What is the visual quality of the restoration result?",
    "Judge the quality of the restored image.",
    "How good is the restored image, taking the degraded input into account?",
    "Can you assess the quality of the restored image?",
    "Please evaluate the quality of the restored output.",
    "How well was this image restored? Rate the quality of the result.",
    "Give your rating of the restored image's quality.",
)

JOINT_QUESTIONS = (
    "Rate the quality of the restored image, and judge whether it shows content that the degraded input does "
    "not support.",
    "How good is the restoration, and did it hallucinate content?",
    "Assess the restored image's quality and its faithfulness to the degraded input.",
    "Judge the restored image: its overall quality, and whether any of its content is made up.",
)
"""The head formulation's one question (docs/training.md): both answers are read in one forward pass."""

HALLUCINATION_QUESTIONS = (
    "Does the restored image contain hallucinated content that is not supported by the degraded input?",
    "Is there content in the restored image that the degraded input does not support?",
    "Did the restoration invent or remove structures or textures that are not in the degraded input?",
    "Does the restored image show details that were made up rather than recovered from the input?",
    "Compared with the degraded input, does the restored image hallucinate content?",
    "Are there fabricated textures or objects in the restored image?",
    "Is the restored image unfaithful to the content of the degraded input?",
    "Has the restoration model added or erased content that the input does not show?",
    "Does the result contain hallucinations with respect to the degraded image?",
)


@dataclass(frozen=True)
class PromptContract:
    """Questions, answer stems and answer words.

    The first question of each tuple is canonical (evaluation, inference, reward); the others are paraphrases
    sampled during training. Each answer word must be one token of the model's tokenizer, leading space
    included; `llscore.scoring.check_answer_words` enforces this at load time.
    """

    quality_questions: tuple[str, ...] = QUALITY_QUESTIONS
    quality_stem: str = "The quality of the restored image is"
    level_words: tuple[str, ...] = (" excellent", " good", " fair", " poor", " bad")
    level_weights: tuple[float, ...] = (5.0, 4.0, 3.0, 2.0, 1.0)
    hallucination_questions: tuple[str, ...] = HALLUCINATION_QUESTIONS
    hallucination_stem: str = "Answer:"
    yes_no_words: tuple[str, str] = (" Yes", " No")
    degraded_caption: str = "The degraded input image:"
    restored_caption: str = "The restored image:"
    no_reference_caption: str = "An image produced by a restoration model:"
    joint_questions: tuple[str, ...] = JOINT_QUESTIONS
    quality_token: str = "<QUAL>"
    hallucination_token: str = "<HAL>"
    joint_stem: str = "Quality: <QUAL> Hallucination: <HAL>"

    def __post_init__(self):
        """A checkpoint's contract is untrusted input: a contract that would score nonsense is refused here."""
        for token in self.head_tokens:
            if self.joint_stem.count(token) != 1:
                raise ValueError(f"joint_stem must hold {token!r} once, got {self.joint_stem!r}")
        if not all(token.strip() and token.strip() == token for token in self.head_tokens):
            raise ValueError(
                f"quality_token and hallucination_token must be words without spaces, got {self.head_tokens!r}"
            )
        if self.quality_token == self.hallucination_token:
            raise ValueError(f"quality_token and hallucination_token must differ, got {self.head_tokens!r}")
        for name in (
            "quality_questions",
            "hallucination_questions",
            "joint_questions",
            "level_words",
            "yes_no_words",
        ):
            values = getattr(self, name)
            if not values or not all(isinstance(v, str) and v.strip() for v in values):
                raise ValueError(f"{name} must be a non-empty list of non-empty strings, got {values!r}")
        if len(self.level_words) != len(self.level_weights):
            raise ValueError(
                f"level_words ({len(self.level_words)}) and level_weights ({len(self.level_weights)}) "
                "must have the same length"
            )
        if not 2 <= len(self.level_words) <= 10 or len(set(self.level_words)) != len(self.level_words):
            raise ValueError(f"level_words must be 2 to 10 distinct words, got {list(self.level_words)!r}")
        weights = self.level_weights
        if not all(
            isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) for w in weights
        ):
            raise ValueError(f"level_weights must be finite numbers, got {list(weights)!r}")
        if len(set(weights)) != len(weights):
            raise ValueError(f"level_weights must be distinct, got {list(weights)!r}")
        if len(self.yes_no_words) != 2 or self.yes_no_words[0] == self.yes_no_words[1]:
            raise ValueError(f"yes_no_words must be two different words (yes, no), got {self.yes_no_words!r}")

    @property
    def score_range(self) -> tuple[float, float]:
        return min(self.level_weights), max(self.level_weights)

    @property
    def head_tokens(self) -> tuple[str, str]:
        """The head formulation's special tokens, quality first: their hidden states feed the two heads."""
        return self.quality_token, self.hallucination_token

    @property
    def answer_words(self) -> tuple[str, ...]:
        return (*self.level_words, *self.yes_no_words)

    def question(self, task: str, rng: random.Random | None = None) -> str:
        """The canonical question for `task` ("quality", "hallucination" or the head formulation's "joint"), or a
        paraphrase drawn by `rng`."""
        questions = {
            "quality": self.quality_questions,
            "hallucination": self.hallucination_questions,
            "joint": self.joint_questions,
        }[task]
        return questions[0] if rng is None else rng.choice(questions)

    def stem(self, task: str) -> str:
        return {
            "quality": self.quality_stem,
            "hallucination": self.hallucination_stem,
            "joint": self.joint_stem,
        }[task]

    def messages(self, task: str, with_degraded: bool, rng: random.Random | None = None) -> list[dict]:
        """Chat messages for one item: images in the user turn, the answer stem as an open assistant turn."""
        if with_degraded:
            content = [
                {"type": "text", "text": self.degraded_caption},
                {"type": "image"},
                {"type": "text", "text": self.restored_caption},
                {"type": "image"},
            ]
        else:
            content = [{"type": "text", "text": self.no_reference_caption}, {"type": "image"}]
        content.append({"type": "text", "text": self.question(task, rng)})
        return [
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": self.stem(task)}]},
        ]

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> PromptContract:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown prompt contract keys {sorted(unknown)}; valid keys: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


MAX_PIXELS_LIMIT = 16384 * 16384
"""The largest `max_pixels` a contract may name: a checkpoint asking for more would allocate terabytes."""


@dataclass(frozen=True)
class ResolutionRule:
    """How many pixels an image may have after the processor resizes it; identical at train and test time."""

    min_pixels: int = 64 * 28 * 28
    max_pixels: int = 256 * 28 * 28

    def __post_init__(self):
        for name in ("min_pixels", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"the resolution rule's {name} must be a whole number, got {value!r}")
        if self.max_pixels > MAX_PIXELS_LIMIT:
            raise ValueError(
                f"the resolution rule's max_pixels {self.max_pixels:,} is above {MAX_PIXELS_LIMIT:,} "
                "(a 16384 × 16384 image); no Qwen-VL recipe reads images that large"
            )
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(
                f"the resolution rule needs 0 < min_pixels <= max_pixels, got min_pixels={self.min_pixels}, "
                f"max_pixels={self.max_pixels}"
            )


HEAD_PROMPT_FIELDS = ("joint_questions", "quality_token", "hallucination_token", "joint_stem")
"""The `PromptContract` fields that only the head formulation reads."""
FORMULATIONS = ("levels", "heads")
"""How a checkpoint reads its two answers (docs/training.md): "levels" from the answer words' logits (Q-Align
style), "heads" from a quality head and a hallucination head on the hidden states at `<QUAL>` / `<HAL>` (the
LL-Bench paper's LL-Score); each is a module of llscore/formulations/."""


def check_formulation(name: str) -> str:
    """`name` if it names a formulation: the one check of it, for a recipe and a checkpoint's contract alike."""
    if name not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}, got {name!r}")
    return name


@dataclass(frozen=True)
class LLScoreConfig:
    """What `llscore_config.json` holds next to the weights."""

    prompts: PromptContract = field(default_factory=PromptContract)
    resolution: ResolutionRule = field(default_factory=ResolutionRule)
    base_model: str | None = None
    formulation: str = "levels"

    def __post_init__(self):
        check_formulation(self.formulation)

    def to_dict(self) -> dict:
        """A level checkpoint's file leaves the head formulation's prompt fields out, so that installs from before
        it (whose contract refuses unknown keys) still read it; a head checkpoint keeps them, and such installs
        refuse it rather than score it with answer words."""
        prompts = self.prompts.to_dict()
        if self.formulation == "levels":
            prompts = {key: value for key, value in prompts.items() if key not in HEAD_PROMPT_FIELDS}
        return {
            "prompts": prompts,
            "resolution": dataclasses.asdict(self.resolution),
            "base_model": self.base_model,
            "formulation": self.formulation,
        }

    @classmethod
    def from_dict(cls, data: dict) -> LLScoreConfig:
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k, {}), dict) for k in ("prompts", "resolution")
        ):
            raise ValueError("expected a mapping with 'prompts' and 'resolution' mappings and 'base_model'")
        resolution = data.get("resolution", {})
        unknown = set(resolution) - {f.name for f in dataclasses.fields(ResolutionRule)}
        if unknown:
            raise ValueError(
                f"unknown resolution keys {sorted(unknown)}; valid keys: ['max_pixels', 'min_pixels']"
            )
        return cls(
            prompts=PromptContract.from_dict(data.get("prompts", {})),
            resolution=ResolutionRule(**resolution),
            base_model=data.get("base_model"),
            formulation=data.get("formulation", "levels"),  # checkpoints from before the head formulation
        )
