"""Datasets other than LL-Bench enter through adapters (docs/data_contract.md, "Other datasets").

The seam is LL-Bench's images table: every dataset gives one row per judged image with the image (`restored`),
the input the evaluator sees beside it (`degraded`), its source, and the human score. LL-Bench's other tables
are optional: `pairs` and `hallucination` are carried when a dataset has them (None when not), and evaluation
skips, and says it skips, the metrics that need what is absent (`llscore.evaluation.skipped_metrics`). Rankings
are read by nothing that evaluates, so the seam does not carry them. LL-Bench itself is read by
`llscore.data.tables` (its five tables, prepared into splits); the adapters here read other releases, laid out
exactly as their authors ship them, into the seam:

- `pipal`: PIPAL's training release (NTIRE 2021 perceptual IQA challenge; Gu et al., ECCV 2020), outputs of
  restoration and super-resolution methods scored by Elo from pairwise human votes. `Train_Ref/` holds the 200
  references (`A0001.bmp`), `Train_Label/` one text file per reference (`A0001.txt`) of `name,score` lines
  (`A0001_00_00.bmp,1461.2262`), and the distorted images sit in the release's other folders (`Train_Dist/`,
  or `Distortion_1/` ... `Distortion_4/` as the download splits them). The layout follows the authors'
  repository (github.com/HaomingCai/PIPAL-dataset, codes/data/README.md and data_util.py) and pyiqa's meta-info
  script (github.com/chaofengc/IQA-PyTorch, scripts/process_pipal.py: reference = the name's first field +
  `.bmp`).
- `kadid10k`: KADID-10k (Lin et al., QoMEX 2019), 81 references x 25 synthetic distortions x 5 levels with
  mean opinion scores: `dmos.csv` (columns `dist_img,ref_img,dmos,var`; higher dmos is better) and `images/`
  holding references and distorted images (`I01.png`, `I01_01_01.png`: reference, distortion type, level), as
  pyiqa reads it (scripts/process_kadid10k.py). Distortion types are named, and grouped into the paper's seven
  groups, in `KADID_TYPES`.

Both are full-reference datasets: there is no degraded input, so the reference takes the input's place
(`degraded` = `reference` = the clean reference image) and the source is the reference. A missing folder, file,
column or image, or an unusable row, is one `DataError` naming the file, line and column.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from llscore.errors import DataError

IMAGE_COLUMNS = (
    "image_id",
    "restored",
    "degraded",
    "reference",
    "source_id",
    "task",
    "model",
    "model_family",
    "score",
    "std",
)
"""The images table every dataset gives: the judged image and the input shown beside it (absolute paths), the
clean reference ("" where none), the source, task, model and family ("" where a dataset has none), the human
score (higher is better, on the dataset's own scale) and its spread (NaN where not given)."""
OPTIONAL_PARTS = ("pairs", "hallucination")
IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


@dataclass
class ScoredDataset:
    """One dataset through the seam: the images table, and the optional tables it has (None: it has none)."""

    name: str
    root: Path
    images: pd.DataFrame
    pairs: pd.DataFrame | None = None
    """Compared pairs as a prepared dataset holds them (`llscore.evaluation.PAIR_COLUMNS`)."""
    hallucination: pd.DataFrame | None = None
    """image_id, label (0/1 or a vote fraction)."""
    full_reference: bool = False
    """The input column holds the clean reference (no degraded input exists)."""

    @property
    def absent(self) -> dict[str, str]:
        """The optional tables this dataset lacks, each with why (`llscore.evaluation.EvalData.absent`)."""
        return {
            part: f"{self.name} has no {part} table" for part in OPTIONAL_PARTS if getattr(self, part) is None
        }


@dataclass(frozen=True)
class Adapter:
    name: str
    layout: str
    """What the release folder holds, for errors and --help."""
    read: Callable[[Path], ScoredDataset]


def read_dataset(name: str, root: str | Path) -> ScoredDataset:
    """The dataset `name` (a key of `ADAPTERS`) read from its release folder `root`."""
    if name not in ADAPTERS:
        raise DataError(f"unknown dataset {name!r}; adapters: {', '.join(ADAPTERS)}")
    adapter = ADAPTERS[name]
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{name} folder not found: {root} (it holds {adapter.layout})")
    dataset = adapter.read(root)
    check_images_table(dataset)
    return dataset


def check_images_table(dataset: ScoredDataset) -> None:
    """What every dataset must give: the images table's columns, rows, unique ids and finite scores."""
    missing = [c for c in IMAGE_COLUMNS if c not in dataset.images.columns]
    if missing:
        raise DataError(f"the {dataset.name} adapter gives no column(s) {missing} of the images table")
    images = dataset.images
    if images.empty:
        raise DataError(f"{dataset.root}: no scored images in {dataset.name}")
    if images["image_id"].duplicated().any():
        raise DataError(
            f"{dataset.name}: image id {images['image_id'][images['image_id'].duplicated()].iloc[0]!r} twice"
        )
    if not images["score"].map(math.isfinite).all():
        raise DataError(f"{dataset.name}: a human score is not a finite number")


def _images_under(folder: Path, skip: tuple[Path, ...] = ()) -> dict[str, list[Path]]:
    """Image files below `folder` (not in `skip`), by file name."""
    found: dict[str, list[Path]] = {}
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if Path(top, d) not in skip)
        for name in files:
            if name.lower().endswith(IMAGE_SUFFIXES):
                found.setdefault(name, []).append(Path(top, name))
    return found


def _number(text: str, file: str, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"{column} {text!r} is not a finite number", file=file, line=line, column=column)
    return value


# ----------------------------------------------------------------------------------------------------------
# PIPAL

PIPAL_REFERENCES = "Train_Ref"
PIPAL_LABELS = "Train_Label"
PIPAL_LAYOUT = (
    f"{PIPAL_REFERENCES}/ (references, A0001.bmp), {PIPAL_LABELS}/ (one name,score file per reference, "
    "A0001.txt) and the distorted images (Train_Dist/ or Distortion_1/ ... Distortion_4/)"
)


def read_pipal(root: Path) -> ScoredDataset:
    """PIPAL's training release (module docstring): every labelled distorted image, scored by its Elo.

    task and model are the distorted name's second field (`A0001_10_00.bmp` -> `10`), PIPAL's distortion type.
    """
    references, labels = root / PIPAL_REFERENCES, root / PIPAL_LABELS
    for folder in (references, labels):
        if not folder.is_dir():
            raise DataError(f"no {folder.name}/ folder in {root}; PIPAL's release holds {PIPAL_LAYOUT}")
    label_files = sorted(labels.glob("*.txt"))
    if not label_files:
        raise DataError(f"no label files (*.txt) in {labels}", file=PIPAL_LABELS)
    refs = {path.stem: path for path in references.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES}
    distorted = _images_under(root, skip=(references, labels))
    rows, first_seen = [], {}
    for label_file in label_files:
        file = f"{PIPAL_LABELS}/{label_file.name}"
        for line, text in enumerate(label_file.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if not text.strip():
                continue
            fields = [f.strip() for f in text.split(",")]
            if len(fields) != 2 or not fields[0]:
                raise DataError(f"expected a 'name,score' line, got {text.strip()!r}", file=file, line=line)
            name, score = fields[0], _number(fields[1], file, line, "score")
            parts = Path(name).stem.split("_")
            if len(parts) != 3 or not all(parts):
                raise DataError(
                    f"{name!r} is not a PIPAL name (<reference>_<type>_<index>, e.g. A0001_10_00.bmp)",
                    file=file,
                    line=line,
                    column="name",
                )
            if name in first_seen:
                raise DataError(
                    f"second score for {name} (first in {first_seen[name]})", file=file, line=line
                )
            first_seen[name] = f"{file}, line {line}"
            paths = distorted.get(name, [])
            if len(paths) != 1:
                where = (
                    "not found"
                    if not paths
                    else f"in {len(paths)} folders ({', '.join(map(str, paths[:2]))})"
                )
                raise DataError(
                    f"distorted image {name} {where} under {root} (outside {PIPAL_REFERENCES}/ and {PIPAL_LABELS}/)",
                    file=file,
                    line=line,
                    column="name",
                )
            if parts[0] not in refs:
                raise DataError(
                    f"its reference {parts[0]}.bmp is not in {PIPAL_REFERENCES}/",
                    file=file,
                    line=line,
                    column="name",
                )
            reference = str(refs[parts[0]])
            rows.append(
                (name, str(paths[0]), reference, reference, parts[0], parts[1], parts[1], "", score, math.nan)
            )
    images = pd.DataFrame(rows, columns=list(IMAGE_COLUMNS))
    return ScoredDataset("PIPAL", root, images, full_reference=True)


# ----------------------------------------------------------------------------------------------------------
# KADID-10k

KADID_TABLE = "dmos.csv"
KADID_IMAGES = "images"
KADID_LAYOUT = (
    f"{KADID_TABLE} (columns dist_img,ref_img,dmos,var) and {KADID_IMAGES}/ (I01.png, I01_01_01.png, ...)"
)
KADID_COLUMNS = ("dist_img", "ref_img", "dmos")
"""Required; `var` (the variance of the ratings) is read where present."""
KADID_GROUPS = {
    "blur": ("gaussian_blur", "lens_blur", "motion_blur"),
    "color_distortion": (
        "color_diffusion",
        "color_shift",
        "color_quantization",
        "color_saturation_1",
        "color_saturation_2",
    ),
    "compression": ("jpeg2000", "jpeg"),
    "noise": (
        "white_noise",
        "white_noise_color_component",
        "impulse_noise",
        "multiplicative_noise",
        "denoise",
    ),
    "brightness_change": ("brighten", "darken", "mean_shift"),
    "spatial_distortion": ("jitter", "non_eccentricity_patch", "pixelate", "quantization", "color_block"),
    "sharpness_contrast": ("high_sharpen", "contrast_change"),
}
"""KADID-10k's seven distortion groups and their types, in the order of the type numbers 01-25."""
KADID_TYPES = {
    f"{number:02d}": (name, group)
    for number, (name, group) in enumerate(
        ((name, group) for group, names in KADID_GROUPS.items() for name in names), start=1
    )
}
"""Type number as file names write it -> (type name, group)."""


def read_kadid10k(root: Path) -> ScoredDataset:
    """KADID-10k (module docstring): every row of dmos.csv. task is the distortion group, model the type."""
    table, folder = root / KADID_TABLE, root / KADID_IMAGES
    if not table.is_file():
        raise DataError(f"not found in {root}; KADID-10k's release holds {KADID_LAYOUT}", file=KADID_TABLE)
    if not folder.is_dir():
        raise DataError(f"no {KADID_IMAGES}/ folder in {root}; KADID-10k's release holds {KADID_LAYOUT}")
    try:
        frame = pd.read_csv(table, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"cannot parse as CSV: {err}", file=KADID_TABLE) from err
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in KADID_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"missing column {missing[0]!r}; columns found: {list(frame.columns)}; KADID-10k's are "
            "dist_img,ref_img,dmos,var",
            file=KADID_TABLE,
            line=1,
        )
    frame.index = pd.RangeIndex(2, len(frame) + 2)
    frame = frame.apply(lambda column: column.str.strip())
    frame = frame[(frame != "").any(axis=1)]
    rows, first_seen = [], {}
    for line, row in frame.iterrows():
        for column in KADID_COLUMNS:
            if not row[column]:
                raise DataError(f"empty {column}", file=KADID_TABLE, line=line, column=column)
        dmos = _number(row["dmos"], KADID_TABLE, line, "dmos")
        std = math.nan
        if row.get("var", ""):
            var = _number(row["var"], KADID_TABLE, line, "var")
            if var < 0:
                raise DataError(f"var {row['var']!r} is negative", file=KADID_TABLE, line=line, column="var")
            std = math.sqrt(var)
        name, reference = row["dist_img"], row["ref_img"]
        if name in first_seen:
            raise DataError(
                f"second row for {name} (first on line {first_seen[name]})",
                file=KADID_TABLE,
                line=line,
                column="dist_img",
            )
        first_seen[name] = line
        parts = Path(name).stem.split("_")
        if len(parts) != 3 or parts[1] not in KADID_TYPES:
            raise DataError(
                f"{name!r} is not a KADID-10k name (I<reference>_<type 01-25>_<level>.png)",
                file=KADID_TABLE,
                line=line,
                column="dist_img",
            )
        for column, value in (("dist_img", name), ("ref_img", reference)):
            if not (folder / value).is_file():
                raise DataError(
                    f"image file not found: {KADID_IMAGES}/{value}",
                    file=KADID_TABLE,
                    line=line,
                    column=column,
                )
        kind, group = KADID_TYPES[parts[1]]
        ref_path = str(folder / reference)
        rows.append(
            (name, str(folder / name), ref_path, ref_path, Path(reference).stem, group, kind, "", dmos, std)
        )
    images = pd.DataFrame(rows, columns=list(IMAGE_COLUMNS))
    return ScoredDataset("KADID-10k", root, images, full_reference=True)


ADAPTERS = {
    "pipal": Adapter("pipal", PIPAL_LAYOUT, read_pipal),
    "kadid10k": Adapter("kadid10k", KADID_LAYOUT, read_kadid10k),
}
"""Dataset name (eval.py's --dataset) -> its adapter."""
