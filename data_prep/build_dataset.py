"""Turn an LL-Bench directory, or LL-Bench on the Hugging Face Hub, into a prepared dataset for train.py and eval.py.

    python data_prep/build_dataset.py --bench DIR|hf://OWNER/NAME --out DIR [--config configs/data/llbench.yaml]
        [--download-dir DIR] [--revision REV] [--write-config PATH]
        [--on-bad-image {error,skip}] [--on-bad-row {error,skip}] [--overwrite]

A Hub dataset (hf://anonymousllbench/llbench-dataset) is downloaded first: its tables, validated, then only
the images they reference (resumable; `HF_TOKEN` for a gated dataset). When the data config's columns are not
in the tables, a column map is proposed from the columns found, with the evidence for each choice, and nothing
is built: `--write-config PATH` writes the proposal as a data config to review and pass back with `--config`.

The logic lives in `llscore.data.build`; see its docstring for the output layout. Image paths in the output
are absolute, so the prepared dataset must be rebuilt if the bench moves.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llscore.data.build import build_dataset
from llscore.data.column_map import ColumnMapError, describe_proposal, write_proposal
from llscore.data.config import data_config_at
from llscore.data.inputs import local_bench
from llscore.data.prepared import load_prepared
from llscore.data.tables import POLICIES
from llscore.errors import DataError, add_debug_flag, fail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bench",
        required=True,
        help="LL-Bench root (metadata/, human_preference/) or hf://owner/name on the Hub",
    )
    parser.add_argument(
        "--download-dir",
        type=Path,
        default=None,
        help="where a Hub dataset is downloaded (default data/<name>)",
    )
    parser.add_argument("--revision", default=None, help="Hub dataset revision (branch, tag or commit)")
    parser.add_argument(
        "--write-config",
        type=Path,
        default=None,
        help="write a proposed column map here when columns are missing",
    )
    parser.add_argument("--out", required=True, type=Path, help="where to write the prepared dataset")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="data config (column map, splits); default: the canonical schema, as configs/data/llbench.yaml",
    )
    parser.add_argument(
        "--on-bad-image", choices=POLICIES, default="error", help="missing/corrupt image files"
    )
    parser.add_argument("--on-bad-row", choices=POLICIES, default="error", help="unusable annotation rows")
    parser.add_argument(
        "--overwrite", action="store_true", help="rebuild a prepared dataset that already exists at --out"
    )
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    try:
        config = data_config_at(args.config)
        bench = local_bench(args.bench, config, args.download_dir, args.revision, args.on_bad_row)
        out = build_dataset(
            bench, args.out, config, args.on_bad_image, args.on_bad_row, overwrite=args.overwrite
        )
    except ColumnMapError as err:
        print(
            f"proposed column map (evidence after each column):\n{describe_proposal(err.choices)}",
            file=sys.stderr,
        )
        if args.write_config is None:
            err = DataError(
                f"{err}; write it as a data config with --write-config PATH, review it, pass it with --config"
            )
        else:
            try:
                written = write_proposal(args.write_config, err)
            except FileExistsError as exists:
                return fail("build_dataset.py", exists, args.debug)
            err = DataError(f"{err}; wrote it to {written}: review it, then rerun with --config {written}")
        return fail("build_dataset.py", err, args.debug)
    except (DataError, OSError, ValueError) as err:
        return fail("build_dataset.py", err, args.debug)
    data = load_prepared(out)
    counts = {
        kind: {s: len(d) for s, d in getattr(data, kind).items()}
        for kind in ("quality", "pairs", "hallucination")
    }
    skipped = data.report["skipped"]
    print(f"wrote {out}: {counts}")
    print(
        f"skipped {skipped['images']} images, {skipped['rows']} rows; {skipped['duplicate_rows']} duplicate rows"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
