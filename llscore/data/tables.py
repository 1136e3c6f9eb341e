"""Read the five LL-Bench tables through a `DataConfig` and validate them against each other and the image files.

Every table is read as strings and its index is set to the 1-based line number in the file (header = line 1),
so any row that survives filtering can still be named in an error. All checks are vectorised over rows; only
the image decoding is per file, and it runs in a thread pool (PIL releases the GIL while decoding).

Two policies: `on_bad_image` covers image files that are missing or do not decode (a source whose degraded
image is bad is dropped whole); `on_bad_row` covers rows of the four annotation tables that are unusable
(unknown ids, non-finite scores, pairs across sources, self-pairs, unknown vocabulary). "error" raises a
`DataError` for the first offence; "skip" drops it and records it. The pairs, hallucination and ranking tables
are optional (`config.OPTIONAL_TABLES`): a bench without one of their files reads it as empty and lists it in
`Bench.absent`. `metadata/images.csv` is the key every
other table refers to, so its own problems (duplicate ids, unknown kinds, a source without exactly one
degraded image) are always errors. Exact duplicate rows are dropped and reported in either mode, except in the
hallucination labels, where several rows of one image are votes (the table has no annotator column) and are
averaged weighted by n_votes.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from llscore.data import schema
from llscore.data.config import OPTIONAL_TABLES, TABLES, DataConfig
from llscore.errors import DataError, ImageError
from llscore.images import read_image

logger = logging.getLogger(__name__)

POLICIES = ("error", "skip")


@dataclass
class Table:
    """One table with canonical column names; `names` maps canonical -> name as written in the file."""

    file: str
    names: dict[str, str]
    df: pd.DataFrame


@dataclass
class Bench:
    """A validated bench: canonical, typed tables indexed by file line, plus what was dropped and why."""

    root: Path
    images: pd.DataFrame
    """image_id, path (absolute), kind, source_id, task, model, model_family, optional scene."""
    sources: pd.DataFrame
    """Indexed by source_id: task, scene ('' when the bench names none), degraded_id, degraded (absolute path)."""
    pairs: pd.DataFrame
    """source_id, image_a, image_b, preference ('a'/'b'/'tie'), annotator_id, trial_id."""
    scores: pd.DataFrame
    """image_id, score, std (NaN where not given), n_comparisons (NaN where not given)."""
    hallucination: pd.DataFrame
    """image_id, label in [0, 1], n_votes: one row per image (vote-weighted mean over its rows)."""
    rankings: pd.DataFrame
    rows_read: dict[str, int]
    skipped_images: list[dict] = field(default_factory=list)
    skipped_rows: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)
    """The optional tables (`config.OPTIONAL_TABLES`) whose files the bench lacks; read as empty."""


def read_table(bench_dir: Path, table: str, config: DataConfig) -> Table:
    """Read one table as strings, check its columns, rename them to canonical names and index rows by line."""
    file = config.files[table]
    path = Path(bench_dir) / file
    if not path.is_file():
        raise DataError(f"table not found at {path}", file=file)
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            header = [c.strip() for c in next(csv.reader(f), [])]
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False, encoding="utf-8-sig")
    except (csv.Error, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"cannot parse as CSV: {e}", file=file) from e
    # pandas renames a repeated name ('score' -> 'score.1'), which would pick the first column without a word
    repeated = next((c for i, c in enumerate(header) if c and c in header[:i]), None)
    if repeated is not None:
        raise DataError(
            f"{header.count(repeated)} columns are named {repeated!r}; rename or drop all but one",
            file=file,
            line=1,
            column=repeated,
        )
    df.columns = [str(c).strip() for c in df.columns]
    canonical = schema.COLUMNS[TABLES[table]]
    optional = schema.OPTIONAL_COLUMNS.get(TABLES[table], ())
    names = {}
    for col in canonical:
        name = config.columns[table][col]
        if name in df.columns:
            names[col] = name
        elif col not in optional:
            alias = "" if name == col else f" (canonical {col!r})"
            raise DataError(
                f"missing column {name!r}{alias}; columns found: {list(df.columns)}; "
                f"map it under columns.{table}.{col} in the data config",
                file=file,
            )
    df = df[list(names.values())].rename(columns={v: k for k, v in names.items()})
    df.index = pd.RangeIndex(2, len(df) + 2, name="line")
    df = df.apply(lambda s: s.str.strip())
    return Table(file, names, df[(df != "").any(axis=1)])


def absent_table(table: str, config: DataConfig) -> Table:
    """An optional table the bench lacks: no rows, its canonical columns (required and optional)."""
    columns = schema.COLUMNS[TABLES[table]]
    df = pd.DataFrame({c: pd.Series(dtype=object) for c in columns}, index=pd.RangeIndex(0, name="line"))
    return Table(config.files[table], {c: config.columns[table][c] for c in columns}, df)


def read_or_absent(root: Path, table: str, config: DataConfig, absent: list[str]) -> Table:
    """`read_table`; an optional table whose file is missing is empty and appended to `absent`."""
    if table in OPTIONAL_TABLES and not (root / config.files[table]).exists():
        logger.warning("%s: no %s; the metrics that need it will be skipped", root, config.files[table])
        absent.append(table)
        return absent_table(table, config)
    return read_table(root, table, config)


class _Rows:
    """Applies one policy to vectorised row checks: raise on the first offence, or drop and record it."""

    def __init__(self, policy: str, bench: Bench):
        self.policy, self.bench = policy, bench

    def check(
        self, t: Table, df: pd.DataFrame, bad: pd.Series, column: str, reason, force_skip: bool = False
    ):
        """Drop rows where `bad`; `reason` is a string or a per-row Series of strings."""
        bad = bad.fillna(True).astype(bool)
        if not bad.any():
            return df
        reasons = reason[bad] if isinstance(reason, pd.Series) else pd.Series(reason, index=bad.index[bad])
        reasons = reasons.fillna(f"invalid {column}")
        name = t.names.get(column, column)
        if self.policy == "error" and not force_skip:
            line = int(reasons.index.min())
            more = f" ({len(reasons) - 1} more rows like this)" if len(reasons) > 1 else ""
            raise DataError(f"{reasons.loc[line]}{more}", file=t.file, line=line, column=name)
        self.bench.skipped_rows += [
            {"file": t.file, "line": int(line), "column": name, "reason": str(r)}
            for line, r in reasons.items()
        ]
        return df[~bad]

    def vocab(self, t: Table, df: pd.DataFrame, column: str, lookup: dict[str, str], allow_empty=False):
        """Map spellings to canonical values; unknown spellings are bad rows."""
        mapped = df[column].str.lower().map(lookup)
        bad = mapped.isna() & (df[column] != "") if allow_empty else mapped.isna()
        expected = sorted(set(lookup))
        df = self.check(t, df, bad, column, "unknown value '" + df[column] + f"'; expected one of {expected}")
        return df.assign(**{column: mapped.loc[df.index].fillna("")})

    def number(self, t: Table, df: pd.DataFrame, column: str, lo=-np.inf, hi=np.inf, optional=False):
        """Parse a numeric column; empty cells are NaN where `optional`, otherwise bad rows."""
        if column not in df:
            return df.assign(**{column: np.nan})
        values = pd.to_numeric(df[column], errors="coerce").astype(float)
        empty = (df[column] == "") if optional else pd.Series(False, index=df.index)
        bad = ~empty & ~(np.isfinite(values) & (values >= lo) & (values <= hi))
        limits = "" if (lo, hi) == (-np.inf, np.inf) else f" in [{lo:g}, {hi:g}]"
        df = self.check(t, df, bad, column, f"{column} '" + df[column] + f"' is not a finite number{limits}")
        return df.assign(**{column: values.loc[df.index]})

    def duplicates(self, t: Table, df: pd.DataFrame) -> pd.DataFrame:
        """Drop exact duplicate rows (every column equal), reporting each with the line it repeats."""
        dup = df.duplicated(keep=False)
        if not dup.any():
            return df
        sub = df[dup]
        lines = pd.Series(sub.index, index=sub.index)
        first = lines.groupby([sub[c] for c in sub.columns], sort=False).transform("first")
        repeat = first != lines
        self.bench.duplicates += [
            {"file": t.file, "line": int(line), "duplicate_of": int(of)} for line, of in first[repeat].items()
        ]
        return df.drop(index=first[repeat].index)

    def references(
        self, t: Table, df: pd.DataFrame, image_columns, lost: dict[str, set[str]]
    ) -> pd.DataFrame:
        """Drop rows that refer to an image or source skipped under `on_bad_image` (never an error)."""
        columns = [(c, "image") for c in image_columns] + [("source_id", "source")] * ("source_id" in df)
        for c, kind in columns:
            reason = f"refers to skipped {kind} '" + df[c] + "'"
            df = self.check(t, df, df[c].isin(lost[kind]), c, reason, force_skip=True)
        return df

    def known(
        self, t: Table, df: pd.DataFrame, column: str, valid: pd.Index, images_file: str
    ) -> pd.DataFrame:
        """Drop rows whose id in `column` is not among `valid` (ids defined by images.csv)."""
        what = "source_id" if column == "source_id" else "image id"
        reason = f"unknown {what} '" + df[column] + f"' (not in {images_file})"
        return self.check(t, df, ~df[column].isin(valid), column, reason)

    def items(self, t: Table, df, items: pd.Series, bad: pd.Series, column: str, template: str, **kw):
        """Drop rows where any exploded item (index = line) is bad; `template` names the row's first bad item."""
        first = items[bad].groupby(level=0).first()
        reason = pd.Series([template.format(v) for v in first], index=first.index, dtype=object)
        return self.check(t, df, pd.Series(df.index.isin(first.index), index=df.index), column, reason, **kw)


def check_image(path: str) -> str | None:
    """None if `path` is a decodable image, otherwise why not."""
    if not os.path.isfile(path):
        return "image file not found"
    try:
        read_image(path)
    except ImageError as err:
        return str(err).removeprefix(f"{path}: ")
    return None


def check_images(paths: pd.Series, num_workers: int) -> pd.Series:
    """Why each image path is unusable (None where fine); each distinct file is decoded once, in parallel."""
    unique = paths.unique()
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        results = list(
            tqdm(
                pool.map(check_image, unique, chunksize=64),
                total=len(unique),
                desc="checking images",
                disable=None,
            )
        )
    return paths.map(dict(zip(unique, results, strict=True)))


def _validate_images(t: Table, config: DataConfig, rows: _Rows) -> pd.DataFrame:
    df = t.df
    for col in ("image_id", "path", "kind", "source_id", "task"):
        df = rows.check(t, df, df[col] == "", col, f"empty {col}")
    lines = pd.Series(df.index, index=df.index)
    first = lines.groupby(df.image_id, sort=False).transform("first")
    df = rows.check(
        t,
        df,
        first != lines,
        "image_id",
        "duplicate image_id '" + df.image_id + "' (first on line " + first.astype(str) + ")",
    )
    df = rows.vocab(t, df, "kind", config.lookup("kind"))
    df = rows.vocab(t, df, "model_family", config.lookup("model_family"), allow_empty=True)
    restored = df.kind == "restored"
    df = rows.check(t, df, restored & (df.model == ""), "model", "a restored image needs its model")
    df = rows.check(
        t, df, restored & (df.model_family == ""), "model_family", "a restored image needs its model_family"
    )
    degraded = df.kind == "degraded"
    n_degraded = degraded.groupby(df.source_id).transform("sum")
    df = rows.check(
        t, df, n_degraded == 0, "source_id", "source '" + df.source_id + "' has no image of kind 'degraded'"
    )
    second = degraded & (degraded.groupby(df.source_id).cumsum() > 1)
    df = rows.check(t, df, second, "kind", "source '" + df.source_id + "' has a second degraded image")
    task = df.source_id.map(df[degraded].set_index("source_id").task)
    reason = "task '" + df.task + "' differs from task '" + task + "' of source '" + df.source_id + "'"
    return rows.check(t, df, df.task != task, "task", reason)


def read_tables(
    bench_dir: str | Path, config: DataConfig | None = None, on_bad_row: str = "error"
) -> tuple[Bench, dict[str, Table], _Rows, dict[str, pd.DataFrame]]:
    """Read and validate the five tables (the optional ones where present) without opening an image (what a
    download checks before fetching the images): the bench with `images` set (absolute paths), the tables, the
    row policy and the validated rows."""
    config = config or DataConfig()
    if on_bad_row not in POLICIES:
        raise ValueError(f"on_bad_row must be one of {POLICIES}, got {on_bad_row!r}")
    root = Path(bench_dir).resolve()
    if not root.is_dir():
        raise DataError(f"bench directory not found: {root}")
    clock = time.perf_counter()
    absent: list[str] = []
    tables = {name: read_or_absent(root, name, config, absent) for name in TABLES}
    empty = pd.DataFrame()
    bench = Bench(root, *[empty] * 6, rows_read={k: len(t.df) for k, t in tables.items()}, absent=absent)
    images = _validate_images(tables["images"], config, _Rows("error", bench))
    bench.images = images.assign(path=[os.path.normpath(os.path.join(root, p)) for p in images.path])
    rows = _Rows(on_bad_row, bench)
    validated = {
        "pairs": _validate_pairs(tables["pairs"], config, rows, bench.images),
        "scores": _validate_scores(tables["scores"], config, rows, bench.images),
        "hallucination": _validate_hallucination(tables["hallucination"], config, rows, bench.images),
        "rankings": _validate_rankings(tables["rankings"], config, rows, bench.images),
    }
    bench.timings["read_and_validate_tables"] = time.perf_counter() - clock
    return bench, tables, rows, validated


def load_bench(
    bench_dir: str | Path,
    config: DataConfig | None = None,
    on_bad_image: str = "error",
    on_bad_row: str = "error",
) -> Bench:
    """Read and validate a bench; raises `DataError` naming file, line and column for the first problem.

    Tables are validated before any image is decoded (`read_tables`), so a table error surfaces in seconds,
    not after decoding every image of the real release.
    """
    config = config or DataConfig()
    if on_bad_image not in POLICIES:
        raise ValueError(f"on_bad_image must be one of {POLICIES}, got {on_bad_image!r}")
    bench, tables, rows, validated = read_tables(bench_dir, config, on_bad_row)
    images = bench.images
    pairs, scores, hallucination, rankings = (
        validated[k] for k in ("pairs", "scores", "hallucination", "rankings")
    )

    clock = time.perf_counter()
    problems = check_images(images.path, config.num_workers)
    bench.timings["check_images"] = time.perf_counter() - clock
    bad = problems.notna()
    if bad.any() and on_bad_image == "error":
        line = int(bad[bad].index.min())
        more = f" ({bad.sum() - 1} more unusable images)" if bad.sum() > 1 else ""
        raise DataError(
            f"{problems.loc[line]}: {images.path.loc[line]}{more}; pass on_bad_image='skip' "
            "(--on-bad-image skip) to build without them",
            file=tables["images"].file,
            line=line,
            column=tables["images"].names["path"],
        )
    lost_sources = set(images.source_id[bad & (images.kind == "degraded")])
    dropped = bad | images.source_id.isin(lost_sources)
    gone = images[dropped].assign(reason=problems[dropped])
    orphan = gone.reason.isna()
    gone.loc[orphan, "reason"] = "the degraded image of source '" + gone.source_id[orphan] + "' is unusable"
    bench.skipped_images = gone.reset_index()[["image_id", "path", "line", "reason"]].to_dict("records")
    lost = {"image": set(gone.image_id), "source": lost_sources}

    bench.images = images = images[~dropped]
    degraded = images[images.kind == "degraded"].set_index("source_id")
    bench.sources = pd.DataFrame(
        {
            "task": degraded.task,
            "scene": degraded.get("scene", ""),
            "degraded_id": degraded.image_id,
            "degraded": degraded.path,
        }
    )
    bench.pairs = rows.references(tables["pairs"], pairs, ("image_a", "image_b"), lost)
    bench.scores = rows.references(tables["scores"], scores, ("image_id",), lost)
    hallucination = rows.references(tables["hallucination"], hallucination, ("image_id",), lost)
    bench.hallucination = _aggregate_votes(hallucination)
    rankings = rows.references(tables["rankings"], rankings, (), lost)
    items = _ranked(rankings)
    template = "ranks skipped image '{}'"
    bench.rankings = rows.items(
        tables["rankings"], rankings, items, items.isin(lost["image"]), "ranking", template, force_skip=True
    )
    return bench


def _validate_pairs(t: Table, config: DataConfig, rows: _Rows, images: pd.DataFrame) -> pd.DataFrame:
    df = rows.duplicates(t, t.df)
    df = rows.vocab(t, df, "preference", config.lookup("preference"))
    df = rows.known(t, df, "source_id", pd.Index(images.source_id.unique()), config.files["images"])
    info = images.set_index("image_id")
    for c in ("image_a", "image_b"):
        df = rows.known(t, df, c, info.index, config.files["images"])
    reason = "self-pair: image_a and image_b are both '" + df.image_b + "'"
    df = rows.check(t, df, df.image_a == df.image_b, "image_b", reason)
    for c in ("image_a", "image_b"):
        kind = df[c].map(info.kind)
        reason = f"{c} '" + df[c] + "' is a " + kind + " image; pairs compare restorations"
        df = rows.check(t, df, kind != "restored", c, reason)
    for c in ("image_a", "image_b"):
        source = df[c].map(info.source_id)
        reason = (
            f"{c} '"
            + df[c]
            + "' belongs to source '"
            + source
            + "', not '"
            + df.source_id
            + "'; pairs compare restorations of one source"
        )
        df = rows.check(t, df, source != df.source_id, c, reason)
    return df


def _validate_scores(t: Table, config: DataConfig, rows: _Rows, images: pd.DataFrame) -> pd.DataFrame:
    df = rows.duplicates(t, t.df)
    df = rows.known(t, df, "image_id", pd.Index(images.image_id), config.files["images"])
    lines = pd.Series(df.index, index=df.index)
    first = lines.groupby(df.image_id, sort=False).transform("first")
    reason = "second score for image '" + df.image_id + "' (first on line " + first.astype(str) + ")"
    df = rows.check(t, df, first != lines, "image_id", reason)
    df = rows.number(t, df, "score")
    df = rows.number(t, df, "std", lo=0, optional=True)
    df = rows.number(t, df, "n_comparisons", lo=0, optional=True)
    return df[["image_id", "score", "std", "n_comparisons"]]


def _validate_hallucination(t: Table, config: DataConfig, rows: _Rows, images: pd.DataFrame) -> pd.DataFrame:
    df = rows.known(t, t.df, "image_id", pd.Index(images.image_id), config.files["images"])
    kind = df.image_id.map(images.set_index("image_id").kind)
    reason = "image '" + df.image_id + "' is a " + kind + " image; hallucination labels apply to restorations"
    df = rows.check(t, df, kind != "restored", "image_id", reason)
    lookup = config.lookup("hallucination")
    label = df.hallucination.str.lower().map(lookup).astype(float)
    label = label.fillna(pd.to_numeric(df.hallucination, errors="coerce").astype(float))
    bad = ~(np.isfinite(label) & (label >= 0) & (label <= 1))
    reason = (
        "hallucination '"
        + df.hallucination
        + f"' is not 0/1, a vote fraction in [0, 1] or one of {sorted(lookup)}"
    )
    df = rows.check(t, df, bad, "hallucination", reason)
    df = rows.number(t, df.assign(hallucination=label.loc[df.index]), "n_votes", lo=1, optional=True)
    return df.assign(n_votes=df.n_votes.fillna(1.0))


def _aggregate_votes(df: pd.DataFrame) -> pd.DataFrame:
    """One row per image: the vote-weighted mean label, so per-annotator rows and vote fractions both work."""
    frame = pd.DataFrame({"image_id": df.image_id, "w": df.hallucination * df.n_votes, "n_votes": df.n_votes})
    agg = frame.groupby("image_id", sort=False).sum()
    label = agg.w / agg.n_votes
    return pd.DataFrame({"image_id": agg.index, "label": label, "n_votes": agg.n_votes}).reset_index(
        drop=True
    )


def _ranked(df: pd.DataFrame) -> pd.Series:
    """The ranked image ids, one per item, indexed by the line of their ranking."""
    return df.ranking.str.split(schema.RANKING_SEPARATOR).explode().str.strip()


def _validate_rankings(t: Table, config: DataConfig, rows: _Rows, images: pd.DataFrame) -> pd.DataFrame:
    df = rows.duplicates(t, t.df)
    df = rows.known(t, df, "source_id", pd.Index(images.source_id.unique()), config.files["images"])
    info = images.set_index("image_id")
    items = _ranked(df)
    df = rows.items(t, df, items, items == "", "ranking", "empty entry in ranking{}")
    items = items[items.index.isin(df.index)]
    unknown = f"ranked image '{{}}' is not in {config.files['images']}"
    df = rows.items(t, df, items, ~items.isin(info.index), "ranking", unknown)
    items = items[items.index.isin(df.index)]
    other = items.map(info.source_id) != df.source_id.reindex(items.index)
    df = rows.items(t, df, items, other, "ranking", "ranked image '{}' belongs to another source")
    items = items[items.index.isin(df.index)]
    twice = pd.Series(pd.MultiIndex.from_arrays([items.index, items]).duplicated(), index=items.index)
    return rows.items(t, df, items, twice, "ranking", "image '{}' is ranked twice")
