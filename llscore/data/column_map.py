"""Propose the column map of a release whose tables use other column names (docs/data_contract.md).

When a configured column is missing from a table, every column found is matched against the canonical schema
by name (the canonical name, common synonyms) and by content (ids that join across tables, image file paths,
a/b/tie-like values, scores, 0/1 or vote fractions, `>`-separated rankings). The proposal lists the evidence
for each choice and names what it cannot decide: two columns that fit equally well are ambiguous, a required
column that nothing fits is missing. It is only a proposal: `data_prep/build_dataset.py --write-config PATH`
writes it as a data config with the undecided entries marked, and nothing is built until a config is passed
back with `--config`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from llscore.data import schema
from llscore.data.config import OPTIONAL_TABLES, TABLES, DataConfig
from llscore.errors import DataError

SYNONYMS = {
    "image_id": ["image", "img", "img_id", "imageid", "image_name", "id", "name"],
    "path": ["file", "filepath", "file_path", "image_path", "filename", "relative_path", "location"],
    "kind": ["type", "role", "image_type", "category", "image_kind"],
    "source_id": ["source", "src", "src_id", "input_id", "degraded_id", "lq_id", "group", "sample_id"],
    "task": ["degradation", "task_name", "degradation_type", "distortion", "scenario"],
    "model": ["method", "restorer", "model_name", "algorithm", "method_name", "network"],
    "model_family": ["family", "model_type", "method_type", "method_family", "group_type"],
    "scene": ["photo", "photograph", "scene_id", "image_group", "content"],
    "image_a": ["a", "left", "first", "img_a", "image1", "image_1", "left_image", "first_image", "id_a"],
    "image_b": ["b", "right", "second", "img_b", "image2", "image_2", "right_image", "second_image", "id_b"],
    "preference": ["winner", "choice", "label", "vote", "pref", "result", "answer", "preferred", "better"],
    "annotator_id": ["annotator", "rater", "worker", "worker_id", "user", "user_id", "subject", "expert"],
    "trial_id": ["trial", "session", "hit", "hit_id", "round", "question_id"],
    "score": ["bt_score", "quality", "mos", "bradley_terry", "bt", "quality_score", "strength", "rating"],
    "std": ["sd", "stderr", "se", "uncertainty", "score_std", "std_error", "sigma"],
    "n_comparisons": ["comparisons", "num_comparisons", "count", "n", "n_pairs", "num_pairs"],
    "hallucination": ["hallucinated", "is_hallucination", "hallucination_label", "halluc", "label", "vote"],
    "n_votes": ["votes", "num_votes", "n_annotators", "num_annotators", "count"],
    "ranking": ["rank", "order", "ranked_ids", "rank_order", "ordering"],
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
ACCEPT = 1.0
"""Least total (2 x content + name, each in [0, 1]) for a column to be proposed at all."""
AMBIGUOUS_MARGIN = 0.15
"""Two columns whose totals differ by less than this fit equally well: the map is not decided."""
SAMPLE_ROWS = 5000
"""Rows of each annotation table whose content is tested (the images table is read whole)."""
UNDECIDED = "CHOOSE ONE OF: "
MISSING = "NOT FOUND: name the column here"


@dataclass
class Choice:
    """What the proposal says of one canonical column of one table."""

    table: str
    canonical: str
    column: str | None
    evidence: str
    status: (
        str  # "matched", "ambiguous", "missing" (required, nothing fits) or "absent" (optional, nothing fits)
    )
    rivals: list[str] = field(default_factory=list)


class ColumnMapError(DataError):
    """Configured columns are missing; carries the proposed map (`choices`) and the data config it started from."""

    def __init__(self, message: str, choices: list[Choice], config: DataConfig, bench: Path, file: str):
        super().__init__(message, file=file)
        self.choices, self.config, self.bench = choices, config, bench


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _name_score(column: str, canonical: str, configured: str) -> tuple[float, str]:
    name = _norm(column)
    if name in (_norm(canonical), _norm(configured)):
        return 1.0, f"named {canonical}"
    if name in {_norm(s) for s in SYNONYMS.get(canonical, [])}:
        return 0.8, f"name ~ {canonical}"
    near = max(
        difflib.SequenceMatcher(None, name, _norm(s)).ratio()
        for s in [canonical, *SYNONYMS.get(canonical, [])]
    )
    return (0.4, f"name resembles {canonical}") if near >= 0.8 else (0.0, "")


def _share(mask) -> float:
    return float(np.mean(mask)) if len(mask) else 0.0


class _Context:
    """What the content tests need from the other tables: the image ids, source ids and kinds found."""

    def __init__(self):
        self.image_ids: set[str] = set()
        self.source_ids: set[str] = set()
        self.n_degraded = 0


class _Column:
    """One column's non-empty values, read once for every content test."""

    def __init__(self, values: pd.Series):
        self.v = pd.Series(values[values != ""].to_numpy(dtype=object))
        self.lower = self.v.str.lower()
        self.numbers = pd.to_numeric(self.v, errors="coerce")

    def share_in(self, ids: set[str]) -> float:
        return _share([x in ids for x in self.v]) if ids else 0.0


def _content(canonical: str, column: _Column, config: DataConfig, ctx: _Context) -> tuple[float, str]:
    """How well a column's values fit `canonical`, with the evidence in words."""
    v, numbers = column.v, column.numbers
    if v.empty:
        return 0.0, "empty"
    unique = v.nunique() / len(v)
    numeric = _share(numbers.notna())
    integer = numeric == 1.0 and bool(np.all(np.mod(numbers, 1) == 0))
    in_ids = column.share_in(ctx.image_ids)

    def vocab(name: str) -> float:
        return _share(column.lower.isin(set(config.lookup(name))))

    if canonical == "image_id":
        if ctx.image_ids:
            return in_ids, f"{in_ids:.0%} of values are image ids"
        files = _share(column.lower.str.endswith(IMAGE_SUFFIXES))
        fit = float(unique == 1.0 and files < 0.5 and (numeric < 1.0 or integer))
        return fit, f"{unique:.0%} unique values" + (", not file paths" if files < 0.5 else ", file paths")
    if canonical == "path":
        files = _share(column.lower.str.endswith(IMAGE_SUFFIXES))
        return files, f"{files:.0%} of values are image files"
    if canonical in ("kind", "model_family", "preference"):
        share = vocab(canonical)
        return (
            share,
            f"{share:.0%} of values are {canonical} words ({', '.join(sorted(set(v.str.lower()))[:4])})",
        )
    if canonical == "source_id":
        if ctx.source_ids:
            share = column.share_in(ctx.source_ids)
            return share, f"{share:.0%} of values are source ids"
        fits = ctx.n_degraded and v.nunique() == ctx.n_degraded
        return (0.9 if fits else 0.0), f"{v.nunique()} distinct values" + (
            " = one per degraded image" if fits else ""
        )
    if canonical in ("image_a", "image_b"):
        return in_ids, f"{in_ids:.0%} of values are image ids"
    if canonical == "ranking":
        share = _share(v.str.contains(schema.RANKING_SEPARATOR, regex=False))
        return share, f"{share:.0%} of values are '{schema.RANKING_SEPARATOR}'-separated lists"
    if canonical == "score":
        fit = float(numeric == 1.0 and not integer and unique > 0.5)
        return fit, f"{numeric:.0%} numeric, {unique:.0%} distinct" + (
            ", not integers" if not integer else ""
        )
    if canonical == "std":
        fit = 0.6 * float(numeric == 1.0 and not integer and bool((numbers >= 0).all()))
        return fit, "non-negative numbers" if fit else "not non-negative numbers"
    if canonical in ("n_comparisons", "n_votes"):
        fit = 0.6 * float(integer and bool((numbers >= 0).all()))
        return fit, "non-negative integers" if fit else "not counts"
    if canonical == "hallucination":
        words = vocab("hallucination")
        unit = _share(numbers.between(0, 1))
        share = max(words, unit)
        return share, f"{share:.0%} of values are 0/1, vote fractions or yes/no words"
    if canonical in ("task", "model", "scene", "annotator_id", "trial_id"):
        # no content test tells these apart: repeated labels that are not ids of images, decided by name
        fit = 0.3 * float(in_ids < 0.5 and numeric < 1.0)
        return fit, f"{v.nunique()} distinct labels"
    return 0.0, ""


def _read(root: Path, file: str, rows: int | None) -> pd.DataFrame:
    path = root / file
    if not path.is_file():
        raise DataError(f"table not found at {path}", file=file)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", nrows=rows)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.apply(lambda s: s.str.strip())


def missing_columns(root: str | Path, config: DataConfig) -> list[tuple[str, str, list[str]]]:
    """(table, canonical column, the table's header) for each required column whose configured name the header
    lacks; only headers are read, and a table that is absent or does not parse is left to the validator."""
    missing = []
    for table, canonical_file in TABLES.items():
        try:
            header = pd.read_csv(
                Path(root) / config.files[table], dtype=str, nrows=0, encoding="utf-8-sig"
            ).columns
        except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError):
            continue
        header = [str(c).strip() for c in header]
        optional = schema.OPTIONAL_COLUMNS.get(canonical_file, ())
        missing += [
            (table, c, header)
            for c in schema.COLUMNS[canonical_file]
            if c not in optional and config.columns[table][c] not in header
        ]
    return missing


def _decide(table: str, frame: pd.DataFrame, config: DataConfig, ctx: _Context) -> list[Choice]:
    canonical_file = TABLES[table]
    optional = schema.OPTIONAL_COLUMNS.get(canonical_file, ())
    columns = {name: _Column(frame[name]) for name in frame.columns}
    fits: dict[str, list[tuple[float, str, str]]] = {}
    for canonical in schema.COLUMNS[canonical_file]:
        ranked = []
        for column in frame.columns:
            name, name_why = _name_score(column, canonical, config.columns[table][canonical])
            content, content_why = _content(canonical, columns[column], config, ctx)
            total = 2 * content + name
            if canonical in optional and name == 0:
                continue  # an optional column is never taken on content alone (any count could be n_votes)
            ranked.append((total, column, "; ".join(w for w in (name_why, content_why) if w)))
        fits[canonical] = sorted(ranked, key=lambda r: -r[0]) or [(0.0, "", "")]
    choices, taken = {}, set()
    # the most certain canonical column picks first; a column serves one canonical column
    order = sorted(fits, key=lambda c: -(fits[c][0][0] - (fits[c][1][0] if len(fits[c]) > 1 else 0)))
    for canonical in order:
        free = [r for r in fits[canonical] if r[1] not in taken and r[0] >= ACCEPT]
        if not free:
            status = "absent" if canonical in optional else "missing"
            choices[canonical] = Choice(table, canonical, None, "no column fits", status)
            continue
        best = free[0]
        rivals = [r for r in free[1:] if best[0] - r[0] < AMBIGUOUS_MARGIN]
        taken.add(best[1])
        if rivals:
            names = [best[1], *(r[1] for r in rivals)]
            why = "; ".join(f"`{r[1]}`: {r[2]}" for r in [best, *rivals])
            choices[canonical] = Choice(
                table, canonical, None, f"fit equally well: {why}", "ambiguous", names
            )
        else:
            choices[canonical] = Choice(table, canonical, best[1], best[2], "matched")
    return [choices[c] for c in schema.COLUMNS[canonical_file]]


def propose_column_map(root: str | Path, config: DataConfig) -> list[Choice]:
    """Match the columns of every table against the canonical schema (the images table first: the other
    tables are recognised by the ids that join to it)."""
    root = Path(root)
    ctx = _Context()
    choices = []
    for table in TABLES:
        if table in OPTIONAL_TABLES and not (root / config.files[table]).exists():
            continue  # an optional table the bench lacks has no columns to map
        # the images table whole (its ids are what the others join to), the others from their first rows
        frame = _read(root, config.files[table], None if table == "images" else SAMPLE_ROWS)
        decided = _decide(table, frame, config, ctx)
        if table == "images":
            chosen = {c.canonical: c.column for c in decided}
            if chosen["image_id"]:
                ctx.image_ids = set(frame[chosen["image_id"]])
            if chosen["kind"]:
                kinds = frame[chosen["kind"]].str.lower().map(config.lookup("kind"))
                ctx.n_degraded = int((kinds == "degraded").sum())
            if chosen["source_id"]:
                ctx.source_ids = set(frame[chosen["source_id"]])
            decided = _decide(table, frame, config, ctx)  # again, now that ids are known
            chosen = {c.canonical: c.column for c in decided}
            if chosen["source_id"]:
                ctx.source_ids = set(frame[chosen["source_id"]])
        choices += decided
    return choices


def check_column_map(root: str | Path, config: DataConfig) -> None:
    """Raise `ColumnMapError` with a proposed map when configured columns are missing from the tables (what
    `build_dataset` and the Hub download check before reading a table's rows)."""
    undecided = [
        f"columns.{table}.{canonical}"
        for table, mapping in config.columns.items()
        for canonical, name in mapping.items()
        if name.startswith((UNDECIDED, MISSING))
    ]
    if undecided:  # required or optional: a proposal's open question is never built over
        raise DataError(
            f"the data config leaves {', '.join(undecided)} undecided; name the column of each (see the evidence "
            "in the proposal's comments)"
        )
    missing = missing_columns(root, config)
    if missing:
        table, canonical, header = missing[0]
        name = config.columns[table][canonical]
        alias = "" if name == canonical else f" (canonical {canonical!r})"
        more = f"; {len(missing) - 1} more configured column(s) missing" if len(missing) > 1 else ""
        raise ColumnMapError(
            f"missing column {name!r}{alias}; columns found: {header}; map it under columns.{table}.{canonical} "
            f"in the data config{more} (a column map is proposed from the columns found)",
            propose_column_map(root, config),
            config,
            Path(root),
            file=config.files[table],
        )


def describe_proposal(choices: list[Choice]) -> str:
    """The proposal, one line per canonical column, with its evidence."""
    lines = []
    for c in choices:
        mark = {"matched": c.column, "ambiguous": "AMBIGUOUS", "missing": "MISSING", "absent": "(none)"}[
            c.status
        ]
        lines.append(f"  {c.table}.{c.canonical} <- {mark}: {c.evidence}")
    return "\n".join(lines)


def proposed_config(config: DataConfig, choices: list[Choice]) -> DataConfig:
    """The data config with the proposed columns; undecided entries hold a marker that no table has."""
    columns = {table: dict(mapping) for table, mapping in config.columns.items()}
    for c in choices:
        if c.status == "matched":
            columns[c.table][c.canonical] = c.column
        elif c.status == "ambiguous":
            columns[c.table][c.canonical] = UNDECIDED + " | ".join(c.rivals)
        elif c.status == "missing":
            columns[c.table][c.canonical] = MISSING
    return DataConfig.from_dict({**config.to_dict(), "columns": columns})


def write_proposal(path: str | Path, error: ColumnMapError) -> Path:
    """Write the proposal as a data config, its evidence as comments; refuses to replace an existing file."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; choose another --write-config path")
    config = proposed_config(error.config, error.choices)
    header = (
        f"# Column map proposed by data_prep/build_dataset.py for {error.bench}.\n"
        "# Review every line (evidence below), resolve the CHOOSE / NOT FOUND entries, then pass this file\n"
        "# with --config. Nothing is built from a guess.\n"
        + "\n".join(f"#{line}" for line in describe_proposal(error.choices).splitlines())
        + "\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True))
    return path
