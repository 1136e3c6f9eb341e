"""Load a prepared dataset (the output of `build_dataset`) for training and evaluation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from datasets import Dataset

from llscore.data.config import SPLITS
from llscore.data.splits import check_splits
from llscore.errors import DataError

SAMPLE_SETS = ("quality", "pairs", "hallucination")
"""The three sample sets of a prepared dataset, each a `datasets.DatasetDict` saved in a folder of that name."""
METADATA = ("splits.json", "normalisation.json", "report.json")
ENTRIES = (*SAMPLE_SETS, *METADATA, "stats.md", "preview")
"""Everything `build_dataset` writes into a prepared dataset's folder, and so all that a rebuild may replace."""


@dataclass
class PreparedData:
    """The three sample sets (each a DatasetDict keyed train/val/test), the split and the score normalisation."""

    path: Path
    quality: datasets.DatasetDict
    pairs: datasets.DatasetDict
    hallucination: datasets.DatasetDict
    splits: dict
    normalisation: dict
    report: dict

    def check_contract(self, level_words, level_weights) -> None:
        """Refuse a dataset whose soft targets were built for other answer levels than the contract being
        trained (they are baked into `quality/` at build time)."""
        built = self.normalisation.get("level_words"), self.normalisation.get("level_weights")
        wanted = list(level_words), [float(w) for w in level_weights]
        if built != wanted:
            raise DataError(
                f"{self.path} was built for level words {built[0]} with weights {built[1]}, but the contract "
                f"being trained uses {wanted[0]} with {wanted[1]}; rebuild it with data_prep/build_dataset.py "
                "--overwrite"
            )

    def pair_examples(self, split: str) -> Dataset:
        """Join each human pair with both images' soft targets and hallucination labels."""
        pairs = self.pairs[split].to_pandas()
        quality = self.quality[split].to_pandas().set_index("image_id")
        hallucination = self.hallucination[split].to_pandas().set_index("image_id")["label"]
        frame = pd.DataFrame(
            {
                "example_id": np.arange(len(pairs)),
                "degraded": pairs["degraded"],
                "restored_a": pairs["restored_a"],
                "restored_b": pairs["restored_b"],
                "p_a_better": pairs["p_a_better"].astype("float32"),
                "soft_target_a": quality["soft_target"].reindex(pairs["image_a"]).to_numpy(),
                "soft_target_b": quality["soft_target"].reindex(pairs["image_b"]).to_numpy(),
                "hallucination_a": hallucination.reindex(pairs["image_a"]).to_numpy(dtype="float32"),
                "hallucination_b": hallucination.reindex(pairs["image_b"]).to_numpy(dtype="float32"),
            }
        )
        missing = frame["soft_target_a"].isna() | frame["soft_target_b"].isna()
        if missing.any():
            raise DataError(f"{int(missing.sum())} {split} pairs reference images without a quality score")
        return Dataset.from_pandas(frame, preserve_index=False)

    def training_pairs(self) -> Dataset:
        """The training examples (one human-compared pair each); an error before any model loads when there are none."""
        pairs = self.pair_examples("train")
        if len(pairs) == 0:
            raise DataError(f"{self.path} has no training pairs: nothing to learn from")
        return pairs


def load_prepared(path: str | Path) -> PreparedData:
    """Open a prepared dataset; a missing part or a source in two splits is a `DataError`."""
    path = Path(path)
    files = (*METADATA, *SAMPLE_SETS)
    missing = [f for f in files if not (path / f).exists()]
    if missing:
        raise DataError(
            f"{path} is not a prepared dataset (missing {missing}); build it with data_prep/build_dataset.py"
        )
    splits = json.loads((path / "splits.json").read_text())
    check_splits(splits, file=str(path / "splits.json"))
    parts = {kind: datasets.load_from_disk(str(path / kind)) for kind in SAMPLE_SETS}
    for kind, dd in parts.items():
        if not isinstance(dd, datasets.DatasetDict) or set(dd) != set(SPLITS):
            raise DataError(f"expected a DatasetDict with splits {list(SPLITS)}", file=str(path / kind))
    return PreparedData(
        path=path,
        **parts,
        splits=splits,
        normalisation=json.loads((path / "normalisation.json").read_text()),
        report=json.loads((path / "report.json").read_text()),
    )
