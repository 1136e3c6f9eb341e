"""Fine-tune a Qwen-VL model into LL-Score.

    accelerate launch train.py --config configs/llscore_qwen.yaml [--key value ...]

Any config key can be overridden: `--output_dir DIR`, `--max_steps N`, `--data.prepared_dir DIR`,
`--model.model_name_or_path PATH`, ... (see llscore/config.py).
"""

import argparse
import sys

from llscore.config import ConfigError, load_config
from llscore.data.tables import DataError
from llscore.errors import add_debug_flag, fail
from llscore.hub import HubError
from llscore.modeling import CheckpointError
from llscore.trainer import train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. configs/llscore_tiny.yaml")
    add_debug_flag(parser)
    args, overrides = parser.parse_known_args(argv)
    try:
        config = load_config(args.config, overrides)
        report = train(config)
    except (CheckpointError, ConfigError, DataError, FileExistsError, FileNotFoundError, HubError) as err:
        return fail("train.py", err, args.debug)
    if config.training.process_index == 0:
        for stage in ("before", "after"):
            if stage in report:
                values = ", ".join(f"{k.removeprefix('val_')}={v:.4f}" for k, v in report[stage].items())
                print(f"[llscore] validation {stage} training: {values}")
        print(f"[llscore] saved LL-Score checkpoint to {config.training.output_dir}")
        if "pushed" in report:
            print(f"[llscore] pushed to the Hub: {report['pushed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
