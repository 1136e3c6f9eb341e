"""The embedded default's simulated inputs, made when a recipe asks for them and they are missing: LL-Bench-mini
(`generate_mini_bench`) and the tiny base checkpoint (`build_tiny_base`), the recipe's `SimulatorSettings`.
train.py calls this before `llscore.data.inputs.ensure_training_inputs` prepares the dataset from the bench."""

from __future__ import annotations

import logging
from pathlib import Path

from llscore.config import TrainConfig
from llscore.data.hub_bench import hub_dataset_id
from llscore_sim.settings import SimulatorSettings

logger = logging.getLogger(__name__)


def make_simulated_inputs(config: TrainConfig) -> None:
    """LL-Bench-mini in `bench_dir` and the tiny base at `model_name_or_path`, each only when the
    recipe asks for it and it is missing (a prepared dataset that exists needs no bench)."""
    data, simulators = config.data, config.section(SimulatorSettings)
    bench = Path(data.bench_dir)
    if (
        simulators.generate_mini_bench
        and not Path(data.prepared_dir, "splits.json").is_file()
        and hub_dataset_id(data.bench_dir) is None
        and not (bench / "metadata").is_dir()
    ):
        from llscore_sim.mini_bench import make_mini_bench

        logger.info("generating LL-Bench-mini in %s", bench)
        make_mini_bench(bench, seed=simulators.mini_bench_seed, n_sources=simulators.mini_bench_sources)
    base = Path(config.model.model_name_or_path)
    if simulators.build_tiny_base and not base.exists():
        from llscore_sim.tiny import build_tiny_checkpoint, recorded_shape

        weights = simulators.tiny_base_weights
        family = simulators.build_tiny_base
        shape = recorded_shape(weights) if weights else {}  # the shape the weights were pretrained in
        logger.info("building a tiny %s base %s in %s (%s)", family, shape or "", base, weights or "random")
        build_tiny_checkpoint(family, base, weights=weights, **shape)
