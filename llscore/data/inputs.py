"""What data_prep produces for the entry points, on demand: the prepared dataset, from a bench folder or a Hub
dataset, made once.

Data flows one way (docs/architecture.md): `train.py` and `eval.py` call the functions here to make sure their
inputs exist, and then only read them. The trainer and the evaluation protocol never build anything. The
embedded default's simulated inputs (LL-Bench-mini, the tiny base) are `llscore_sim.inputs`'.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from llscore.data.build import build_dataset
from llscore.data.config import DataConfig, data_config_at
from llscore.data.hub_bench import download_bench, download_folder, hub_dataset_id
from llscore.errors import DataError
from llscore.files import json_default

if TYPE_CHECKING:
    from llscore.config import TrainConfig

logger = logging.getLogger(__name__)


def check_built_with(prepared: Path, data_config: DataConfig, flag: str) -> None:
    """Refuse a prepared dataset that was built with another data config (column map, ratios, seed): its split
    is not the one asked for. `flag` names the option that sets the config."""
    built = json.loads((prepared / "report.json").read_text()).get("config")
    wanted = json.loads(json.dumps(data_config.to_dict(), default=json_default))
    if built != wanted:
        raise DataError(
            f"{prepared} was built with another data config than {flag} gives (column map, ratios or seed "
            "differ); pass the config it was built with, or rebuild it with data_prep/build_dataset.py --overwrite"
        )


def local_bench(
    bench: str | Path,
    config: DataConfig,
    download_dir: str | Path | None = None,
    revision: str | None = None,
    on_bad_row: str = "error",
) -> Path:
    """A bench folder as is; a Hub dataset (`hf://owner/name`) downloaded first (tables, then the images they
    reference) into `download_dir`, by default data/<name>."""
    repo_id = hub_dataset_id(bench)
    if repo_id is not None:
        return download_bench(repo_id, download_folder(repo_id, download_dir), config, revision, on_bad_row)
    if not Path(bench).is_dir():
        raise DataError(f"benchmark folder {bench} not found (a Hub dataset is written hf://owner/name)")
    return Path(bench)


def ensure_training_inputs(config: TrainConfig) -> None:
    """Prepare a recipe's dataset from its bench (a folder, or a Hub dataset downloaded first) when missing, and
    refuse one prepared with another data config."""
    data = config.data
    if not Path(data.prepared_dir, "splits.json").is_file():
        bench = Path(data.bench_dir)
        if hub_dataset_id(data.bench_dir) is not None:
            bench = local_bench(data.bench_dir, data_config_at(data.data_config))
        elif not (bench / "metadata").is_dir():
            raise DataError(
                f"benchmark folder {bench} not found (set bench_dir, or generate_mini_bench: true "
                "to generate LL-Bench-mini there)"
            )
        logger.info("preparing dataset %s from %s", data.prepared_dir, bench)
        build_dataset(bench, data.prepared_dir, data_config_at(data.data_config))
    check_built_with(Path(data.prepared_dir), data_config_at(data.data_config), "data_config")


def ensure_prepared(data: str | Path, data_config: str | Path | None = None) -> Path:
    """A prepared dataset folder as is; an LL-Bench folder (or Hub dataset id, downloaded first) is prepared
    once into `<name>_prepared` beside it, and an existing `<name>_prepared` is used only if it was built with
    the same data config."""
    repo_id = hub_dataset_id(data)
    if repo_id is not None:
        folder = download_folder(repo_id)
        done = folder.parent / f"{folder.name}_prepared"  # built before: no download, no network
        data = folder if (done / "splits.json").is_file() else local_bench(data, data_config_at(data_config))
    data = Path(data)
    if (data / "splits.json").is_file():
        if data_config is not None:
            raise DataError(f"{data} is a prepared dataset: its data config is fixed; drop --data-config")
        return data
    if not (data / "metadata").is_dir():
        raise DataError(
            f"{data}: neither a prepared dataset (splits.json) nor an LL-Bench folder (metadata/)"
        )
    prepared = data.parent / f"{data.name}_prepared"
    if not (prepared / "splits.json").is_file():
        logger.info("preparing dataset %s from %s", prepared, data)
        build_dataset(data, prepared, data_config_at(data_config))
    check_built_with(prepared, data_config_at(data_config), "--data-config")
    return prepared
