"""Scoring backends by name: how a located checkpoint (`llscore.modeling.CheckpointRef`) becomes the
`llscore.scoring.ScoringBackend` that `LLScore` scores with, under the shared runtime options
(`llscore.runtime.RuntimeOptions`). `transformers` is the one registered today; another runtime registers a
builder under its own name and is chosen with `--backend NAME` or `LLScore.from_pretrained(..., backend=NAME)`
(docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Callable

from llscore.errors import ConfigError
from llscore.formulations import formulation_of
from llscore.modeling import CheckpointRef, ModelConfig, load_model
from llscore.runtime import RuntimeOptions
from llscore.scoring import ScoringBackend

BackendBuilder = Callable[..., ScoringBackend]
"""`builder(ref, options, **loading)`: a located checkpoint and the runtime options to a ready backend; `loading`
holds the backend's own loading arguments (transformers: `attn_implementation`, `quantization`)."""

BACKENDS: dict[str, BackendBuilder] = {}


def register_backend(name: str) -> Callable[[BackendBuilder], BackendBuilder]:
    """Register a builder under `name`; a name taken already is refused (two runtimes, one name)."""

    def register(builder: BackendBuilder) -> BackendBuilder:
        if name in BACKENDS:
            raise ValueError(f"backend {name!r} is registered already ({BACKENDS[name].__qualname__})")
        BACKENDS[name] = builder
        return builder

    return register


def check_backend(name: str) -> str:
    """`name` if a backend is registered under it, else one line naming those that are."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; registered: {', '.join(sorted(BACKENDS))}")
    return name


def build_backend(ref: CheckpointRef, options: RuntimeOptions, **loading) -> ScoringBackend:
    """The backend `options.backend` names, built for `ref`."""
    return BACKENDS[check_backend(options.backend)](ref, options, **loading)


@register_backend("transformers")
def transformers_backend(
    ref: CheckpointRef,
    options: RuntimeOptions,
    attn_implementation: str = "sdpa",
    quantization: str | None = None,
) -> ScoringBackend:
    """The checkpoint's weights in transformers (an adapter over its base), read its formulation's way; the
    backend keeps `model` and `processor`, which `LLScore` exposes for saving and for the differentiable reward."""
    model_config = ModelConfig(
        model_name_or_path=str(ref.name),
        dtype=options.dtype,
        attn_implementation=attn_implementation,
        quantization=quantization,
    )
    model, processor = load_model(ref, model_config)
    if options.device is not None and quantization is None:  # a quantized model stays where it was placed
        model.to(options.device)
    return formulation_of(ref.config).backend(model, processor, ref.config)
