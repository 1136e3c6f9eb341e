"""Generate LL-Bench-mini, the offline stand-in for LL-Bench (docs/data_contract.md).

python data_prep/make_mini_bench.py --out data/llbench_mini [--seed 0] [--sources 80] [--overwrite]
"""

import argparse
import sys

from llscore.errors import add_debug_flag, fail
from llscore_sim.mini_bench import make_mini_bench


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", required=True, help="output folder (must be empty or absent unless --overwrite)"
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed, byte-identical bench")
    parser.add_argument("--sources", type=int, default=80, help="source images, stratified over the 16 tasks")
    parser.add_argument("--image-size", type=int, default=112, help="side of every image in pixels")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    try:
        out = make_mini_bench(args.out, args.seed, args.sources, args.overwrite, args.image_size)
    except (FileExistsError, ValueError) as err:
        sys.exit(fail("make_mini_bench.py", err, args.debug))
    print(f"LL-Bench-mini written to {out}")


if __name__ == "__main__":
    main()
