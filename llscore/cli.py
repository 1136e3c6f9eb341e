"""The `llscore` console command: `llscore score ...` scores a folder or files of restored images, or the lines of
a JSONL file in the LL-Bench release's format (`--jsonl`);
`llscore push ...` uploads a checkpoint to the Hugging Face Hub with a generated model card;
`llscore serve ...` serves a checkpoint as a reward on Ray Serve (docs/serving.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llscore.errors import EXPECTED_ERRORS, ConfigError, add_debug_flag, count_argument, fail, fail_after_peer
from llscore.hub_kernels import keep_bitsandbytes_off_the_hub
from llscore.runtime import DTYPE_NAMES, add_runtime_arguments, runtime_options

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(items: list[str]) -> list[Path]:
    """Files as given; folders expanded to their image files in name order, hidden files left out (a macOS
    `._name.png` is metadata, not an image)."""
    paths = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths.extend(
                sorted(
                    p
                    for p in path.iterdir()
                    if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
                )
            )
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not paths:
        raise FileNotFoundError(f"no images found in {items}")
    return paths


def pair_by_name(restored: list[Path], degraded_dir: Path) -> list[Path]:
    """The degraded input of each restored image: same file name, else the one file with the same stem."""
    if not degraded_dir.is_dir():
        raise FileNotFoundError(f"{degraded_dir}: --degraded must be a folder")
    by_stem: dict[str, list[Path]] = {}
    for path in degraded_dir.iterdir():
        by_stem.setdefault(path.stem, []).append(path)
    pairs = []
    for path in restored:
        exact = degraded_dir / path.name
        candidates = [exact] if exact.is_file() else by_stem.get(path.stem, [])
        if len(candidates) != 1:
            found = "none" if not candidates else ", ".join(p.name for p in candidates)
            raise FileNotFoundError(
                f"{path}: expected one degraded input named {path.name} or {path.stem}.* in {degraded_dir}, found {found}"
            )
        pairs.append(candidates[0])
    return pairs


def check_out_path(out: Path, overwrite: bool) -> None:
    """--out must name a file that can be written: not a folder, not below a file, not an existing file unless
    `overwrite`."""
    if out.is_dir():
        raise FileExistsError(f"--out {out} is a folder; name the file to write")
    folder = next(folder for folder in out.absolute().parents if folder.exists())
    if not folder.is_dir():
        raise FileExistsError(f"--out {out}: {folder} is a file, not a folder")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it, or choose another --out")


def score_command(args: argparse.Namespace) -> None:
    from llscore.api import LLScore
    from llscore.files import claim_folder, write_atomic
    from llscore.jsonl import read_requests, result_lines
    from llscore.processes import process_device, process_state

    if args.jsonl and args.degraded:
        raise ConfigError(
            "--degraded pairs --restored images; each line of --jsonl names its own degraded_image"
        )
    args.out = args.out or ("scores.jsonl" if args.jsonl else "scores.csv")
    check_out_path(Path(args.out), args.overwrite)  # found now, not after scoring every image
    if args.jsonl:
        requests = read_requests(args.jsonl)
        restored, degraded = [r.restored for r in requests], [r.degraded for r in requests]
        inputs = [Path(args.jsonl), *restored, *degraded]
    else:
        restored = list_images(args.restored)
        degraded = pair_by_name(restored, Path(args.degraded)) if args.degraded else None
        inputs = [*restored, *(degraded or [])]
    if Path(args.out).resolve() in {Path(path).resolve() for path in inputs}:
        raise FileExistsError(
            f"--out {args.out} is an image to score (or the --jsonl file); it is never replaced"
        )
    # `accelerate launch -m llscore.cli score ...` shares the images out over processes
    state = process_state()
    if state.is_main_process:  # one writer per file: a second `llscore score --out` into it stops now
        claim_folder(args.out, "llscore score")
        # again, held now: another run may have written it since the check above
        check_out_path(Path(args.out), args.overwrite)
    options = runtime_options(args, device=process_device(args.device, state))
    metric = LLScore.from_pretrained(
        args.ckpt,
        dtype=options.dtype,
        device=options.device,
        zero_shot=args.zero_shot,
        backend=options.backend,
    )
    results = metric.score_across_processes(
        restored, degraded, batch_size=args.batch_size, progress=True, workers=options.workers
    )
    if not state.is_main_process:
        return
    low, high = metric.config.prompts.score_range
    if args.jsonl:
        write_atomic(Path(args.out), result_lines(requests, results.to_records()))
        print(
            f"wrote {len(requests)} scored lines to {Path(args.out).resolve()} (quality_score on [{low:g}, {high:g}])"
        )
        return
    frame = results.to_dataframe()
    if degraded is not None:
        frame.insert(1, "degraded", [str(p) for p in degraded])
    write_atomic(Path(args.out), frame.to_csv(index=False))
    plural = "" if len(frame) == 1 else "s"
    print(
        f"wrote {len(frame)} score{plural} to {Path(args.out).resolve()} "
        f"(score scale [{low:g}, {high:g}]; mean {frame['score'].mean():.3f})"
    )


def push_command(args: argparse.Namespace) -> None:
    from huggingface_hub.utils import validate_repo_id

    from llscore.demo import read_examples
    from llscore.hub import push_checkpoint

    if args.space:  # everything the Space needs is checked before the model goes up
        validate_repo_id(args.space)
        examples = read_examples(args.examples, args.examples_count) if args.examples else []
    url = push_checkpoint(
        args.ckpt,
        args.repo_id,
        merge=args.merge,
        private=args.private,
        eval_dir=args.eval_dir,
        base_repo_id=args.base_repo_id,
        dataset=args.dataset,
        license=args.license,
        dtype=args.dtype,
    )
    print(f"pushed {args.ckpt} to {args.repo_id}: {url}")
    if args.space:
        from llscore.space import SpacePage, push_space

        weights = sum(path.stat().st_size for path in Path(args.ckpt).glob("*.safetensors"))
        page = SpacePage(args.repo_id, url.oid, examples, args.hallucination_weight, args.license, weights)
        space = push_space(args.space, page, private=args.private)
        print(f"pushed the demo page of {args.repo_id} to the Space {args.space}: {space}")
        if args.private:
            print(f"the model is private: give the Space an HF_TOKEN secret that can read {args.repo_id}")


def positive_number(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def serve_command(args: argparse.Namespace) -> None:
    import os
    import signal
    import threading

    import torch

    from llscore.modeling import locate_checkpoint
    from llscore.serving.items import DegradedInputs, Limits
    from llscore.serving.protocols import PROTOCOLS
    from llscore.serving.service import TOKEN_VARIABLE, ServeSettings, start, stop, token_digest

    cuda = torch.cuda.is_available()
    locate_checkpoint(args.ckpt)  # a wrong --ckpt is one line here, before Ray starts
    limits = Limits(int(args.max_request_mb * (1 << 20)), args.max_image_pixels)
    DegradedInputs(args.degraded_dir, limits)  # a missing folder or an ambiguous id, before Ray starts
    token = os.environ.get(TOKEN_VARIABLE)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        print(
            f"[llscore] warning: serving on {args.host} without a token; set {TOKEN_VARIABLE}",
            file=sys.stderr,
        )
    settings = ServeSettings(
        ckpt=str(args.ckpt),
        hallucination_weight=args.hallucination_weight,
        dtype=args.dtype,
        device=args.device,
        degraded_dir=args.degraded_dir,
        limits=limits,
        max_batch_size=args.max_batch_size,
        batch_wait_s=args.batch_wait_ms / 1000,
        token_sha256=token_digest(token),
    )
    stopping = threading.Event()

    def listen_for_stop():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())

    listen_for_stop()
    start(
        settings,
        host=args.host,
        port=args.port,
        replicas=args.replicas,
        cpus_per_replica=args.cpus_per_replica,
        gpus_per_replica=args.gpus_per_replica if args.gpus_per_replica is not None else float(cuda),
        ray_address=args.ray_address,
    )
    listen_for_stop()  # again: Ray's start installs its own handlers, which abort the process
    routes = ", ".join(f"{p.name} POST {p.route}" for p in PROTOCOLS.values())
    print(
        f"[llscore] serving {args.ckpt} at http://{args.host}:{args.port} ({routes}); Ctrl-C stops",
        flush=True,
    )
    stopping.wait()
    print("[llscore] shutting down", flush=True)
    stop()


def demo_command(args: argparse.Namespace) -> None:
    from llscore.demo import build_page, read_examples
    from llscore.modeling import resolve_checkpoint
    from llscore.reward import LLScoreReward

    examples = read_examples(args.examples, args.examples_count) if args.examples else []
    reward = LLScoreReward.from_pretrained(args.ckpt, args.hallucination_weight, dtype=args.dtype)
    page = build_page(reward, args.ckpt, resolve_checkpoint(args.ckpt), examples)
    page.launch(server_name=args.host, server_port=args.port, share=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llscore", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score restored images with an LL-Score checkpoint")
    score.add_argument("--ckpt", required=True, help="checkpoint directory or Hub id")
    images = score.add_mutually_exclusive_group(required=True)
    images.add_argument("--restored", nargs="+", help="restored image files or folders")
    images.add_argument(
        "--jsonl",
        help="the LL-Bench release's format: lines {id, task, degraded_image, restored_image}, paths relative "
        "to the file; writes them back with quality_score and hallucination_prob",
    )
    score.add_argument(
        "--degraded", help="folder of degraded inputs, paired with restored images by file name"
    )
    score.add_argument("--out", default=None, help="the file to write (default scores.csv, or scores.jsonl)")
    score.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    score.add_argument("--batch-size", type=count_argument(1), default=8)
    add_runtime_arguments(score)
    score.add_argument(
        "--zero-shot",
        action="store_true",
        help="also accept a base model without llscore_config.json: score it zero-shot with the default prompt contract",
    )
    score.set_defaults(run=score_command)
    push = commands.add_parser(
        "push",
        help="push a checkpoint to the Hugging Face Hub with a model card (token: HF_TOKEN; endpoint: HF_ENDPOINT)",
    )
    push.add_argument("--ckpt", required=True, help="local LL-Score checkpoint directory")
    push.add_argument("--repo-id", required=True, help="USER/NAME on the Hub (created if missing)")
    push.add_argument(
        "--merge",
        action="store_true",
        help="merge a LoRA adapter into its base and push a plain transformers checkpoint",
    )
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument(
        "--eval-dir",
        help="eval.py output folder of this checkpoint; its metrics.json goes into the model card",
    )
    push.add_argument(
        "--base-repo-id",
        help="Hub id of the adapter's base model, needed when the checkpoint records a local path",
    )
    push.add_argument(
        "--dataset",
        default=None,
        help="Hub id or name of the training data, only for a checkpoint without training_data.json "
        "(the card otherwise names the data train.py recorded)",
    )
    push.add_argument("--license", default="cc-by-nc-4.0", help="licence of the pushed weights")
    push.add_argument(
        "--dtype",
        default="float32",
        choices=DTYPE_NAMES,
        help="dtype of merged weights (the merge itself runs in float32)",
    )
    push.add_argument(
        "--space",
        help="also push the demo page (llscore demo) as the Gradio Space USER/NAME, loading this model by its "
        "Hub id at the pushed commit (docs/demo.md)",
    )
    push.add_argument(
        "--examples",
        help="the Space's examples: a prepared dataset (its test split, e.g. data/llbench_mini_prepared) or a "
        "folder of them",
    )
    push.add_argument("--examples-count", type=count_argument(1), default=3, help="how many examples")
    push.add_argument(
        "--hallucination-weight",
        type=float,
        default=1.0,
        help="the Space's λ in quality − λ·P(hallucination)",
    )
    push.set_defaults(run=push_command)
    serve = commands.add_parser(
        "serve",
        help="serve an LL-Score checkpoint as a reward on Ray Serve: Flow-GRPO, verl-omni, UniRL and JSON "
        "(docs/serving.md; optional bearer token: LLSCORE_SERVE_TOKEN)",
    )
    serve.add_argument("--ckpt", required=True, help="checkpoint directory or Hub id")
    serve.add_argument("--host", default="127.0.0.1", help="the address to bind (default loopback only)")
    serve.add_argument("--port", type=count_argument(1), default=8000)
    serve.add_argument(
        "--degraded-dir",
        help="degraded inputs a request may name by file name or stem instead of sending them",
    )
    serve.add_argument(
        "--hallucination-weight", type=float, default=1.0, help="λ in quality − λ·P(hallucination)"
    )
    serve.add_argument("--replicas", type=count_argument(1), default=1, help="scorer replicas (one per GPU)")
    serve.add_argument("--cpus-per-replica", type=positive_number, default=1.0)
    serve.add_argument(
        "--gpus-per-replica", type=float, default=None, help="default: 1 where CUDA is available, else 0"
    )
    serve.add_argument("--max-batch-size", type=count_argument(1), default=16, help="images per model call")
    serve.add_argument(
        "--batch-wait-ms", type=positive_number, default=5.0, help="how long a batch waits to fill"
    )
    serve.add_argument(
        "--max-request-mb", type=positive_number, default=64.0, help="the largest request body accepted"
    )
    serve.add_argument(
        "--max-image-pixels", type=count_argument(1), default=4096 * 4096, help="the largest image accepted"
    )
    serve.add_argument("--dtype", default="float32", choices=DTYPE_NAMES)
    serve.add_argument(
        "--device", default=None, help="e.g. cpu, cuda (default: a GPU where the replica has one)"
    )
    serve.add_argument(
        "--ray-address", default=None, help="join this Ray cluster (default: start a local one)"
    )
    serve.set_defaults(run=serve_command)
    demo = commands.add_parser("demo", help="a page to judge restorations by eye (docs/demo.md)")
    demo.add_argument("--ckpt", required=True, help="checkpoint directory or Hub id")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=count_argument(1), default=7860)
    demo.add_argument("--hallucination-weight", type=float, default=1.0)
    demo.add_argument("--dtype", default="float32", choices=DTYPE_NAMES)
    demo.add_argument(
        "--examples",
        help="examples to pick from: a prepared dataset (its test split, e.g. data/llbench_mini_prepared) or a "
        "folder of them (a Space's examples/)",
    )
    demo.add_argument("--examples-count", type=count_argument(1), default=3, help="how many examples")
    demo.set_defaults(run=demo_command)
    for command in (score, push, serve, demo):
        add_debug_flag(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_bitsandbytes_off_the_hub()  # before loading a model imports bitsandbytes (docs/architecture.md)
    try:
        args.run(args)
    except (*EXPECTED_ERRORS, ValueError) as err:  # ValueError: an argument of the API
        return fail(f"llscore {args.command}", err, args.debug)
    except Exception as err:  # another process failed and said why: a broken collective here is no news
        return fail_after_peer(err, args.debug)
    from llscore.processes import end_processes

    end_processes()
    return 0


if __name__ == "__main__":
    sys.exit(main())
