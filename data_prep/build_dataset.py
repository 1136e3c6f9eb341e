"""Turn an LL-Bench directory into a prepared dataset (samples + splits) for train.py and eval.py.

    python data_prep/build_dataset.py --bench DIR --out DIR [--config configs/data/llbench.yaml]
        [--on-bad-image {error,skip}] [--on-bad-row {error,skip}] [--overwrite]

The logic lives in `llscore.data.build`; see its docstring for the output layout. Image paths in the output
are absolute, so the prepared dataset must be rebuilt if the bench moves.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llscore.data.build import build_dataset
from llscore.data.config import data_config_at
from llscore.data.prepared import load_prepared
from llscore.data.tables import POLICIES, DataError
from llscore.errors import add_debug_flag, fail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bench", required=True, type=Path, help="LL-Bench root (metadata/, human_preference/)"
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
        out = build_dataset(
            args.bench,
            args.out,
            data_config_at(args.config),
            args.on_bad_image,
            args.on_bad_row,
            overwrite=args.overwrite,
        )
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
