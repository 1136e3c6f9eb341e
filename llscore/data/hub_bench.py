"""LL-Bench straight from the Hugging Face Hub: the tables first, validated, then only the images they reference.

`huggingface_hub` does the transfers, so `HF_TOKEN` (or `hf auth login`), `HF_ENDPOINT` and offline mode apply
as everywhere else. Files land in a local folder (`local_dir`), each written whole or not at all, with the
client's per-file commit metadata: a file already downloaded at the pinned revision is not fetched again (an
interrupted download resumes, a second run fetches nothing), one from another revision is checked with the Hub
and replaced if its bytes changed, and every file is checked against the listing's size afterwards. The folder gets a `bench.json` naming the dataset and the revision it holds
(docs/data_contract.md, Provenance).
"""

from __future__ import annotations

import glob
import json
import logging
import re
from pathlib import Path

from llscore.data import schema
from llscore.data.column_map import check_column_map
from llscore.data.config import OPTIONAL_TABLES, TABLES, DataConfig
from llscore.data.provenance import BENCH_RECORD, LL_BENCH_HUB_ID
from llscore.data.tables import read_tables
from llscore.errors import DataError, reason
from llscore.files import write_atomic

logger = logging.getLogger(__name__)

HUB_PREFIX = "hf://"
HUB_ID = re.compile(r"(?:datasets/)?(?P<id>[A-Za-z0-9][\w.-]*/[\w.-]+)")


def hub_dataset_id(bench: str | Path) -> str | None:
    """The dataset id when `bench` is written `hf://owner/name` (or `hf://datasets/owner/name`), else None: a
    plain path is always a local folder, so a folder that does not exist yet is never taken for a Hub id."""
    text = str(bench)
    if not text.startswith(HUB_PREFIX):
        return None
    match = HUB_ID.fullmatch(text.removeprefix(HUB_PREFIX))
    if match is None:
        raise DataError(f"{text}: a Hub dataset is written hf://owner/name")
    return match["id"]


def download_folder(repo_id: str, download_dir: str | Path | None = None) -> Path:
    """Where a Hub dataset's files go: `download_dir`, by default data/<dataset name>."""
    return Path(download_dir) if download_dir else Path("data") / repo_id.split("/")[-1]


def _hub_failure(repo_id: str, err: Exception) -> DataError:
    """One line on what to do, for the ways a Hub dataset can be out of reach."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    page = f"https://huggingface.co/datasets/{repo_id}"
    if isinstance(err, GatedRepoError):
        return DataError(
            f"{repo_id} is gated: accept its terms at {page} while logged in, then set HF_TOKEN (or run "
            "`hf auth login`) with that account"
        )
    if isinstance(err, RepositoryNotFoundError):
        return DataError(
            f"{repo_id}: no such dataset on the Hub, or it is private and HF_TOKEN does not give access to it"
        )
    if isinstance(err, RevisionNotFoundError):
        return DataError(f"{repo_id}: no such revision ({err})")
    if isinstance(err, LocalEntryNotFoundError | OfflineModeIsEnabled):
        return DataError(
            f"{repo_id}: not in the local folder and the Hub cannot be reached (offline mode or no network)"
        )
    return DataError(f"{repo_id}: download failed ({reason(err)})")


def _fetch(api, repo_id: str, revision: str, paths: list[str], local_dir: Path, sizes: dict[str, int]) -> int:
    """Every image in `paths` at `revision`, as the Hub client decides: it keeps per-file commit metadata in
    `local_dir`, so a file already downloaded at this commit is not asked for again, and one from another
    revision (the same name and size, other bytes) is checked with the Hub and replaced. Then every file is
    checked against the listing's size: a short or damaged file is fetched again once, then refused. Returns
    how many files were written."""
    absent = [p for p in paths if p not in sizes]
    if absent:
        raise DataError(
            f"{repo_id}@{revision[:12]}: {len(absent)} file(s) referenced by the tables are not in the dataset, "
            f"e.g. {absent[0]}"
        )

    def stamp(path: str):
        file = local_dir / path
        return file.stat().st_mtime_ns if file.is_file() else None

    def download(paths: list[str], force: bool = False) -> None:
        api.snapshot_download(  # exactly these files (patterns escaped), 8 at a time, with the client's progress bar
            repo_id,
            repo_type="dataset",
            revision=revision,
            local_dir=local_dir,
            allow_patterns=[glob.escape(path) for path in paths],
            force_download=force,
            max_workers=8,
        )

    before = {p: stamp(p) for p in paths}
    download(paths)
    damaged = [p for p in paths if not _complete(local_dir / p, sizes[p])]
    if damaged:
        logger.warning(
            "%s: %d file(s) do not match the Hub's listing; fetching them again", repo_id, len(damaged)
        )
        download(damaged, force=True)
        damaged = [p for p in damaged if not _complete(local_dir / p, sizes[p])]
    if damaged:
        first = local_dir / damaged[0]
        raise DataError(
            f"{repo_id}@{revision[:12]}: {len(damaged)} downloaded file(s) do not match the Hub's listing, e.g. "
            f"{damaged[0]} ({first.stat().st_size if first.is_file() else 0} bytes, listed {sizes[damaged[0]]})"
        )
    return sum(stamp(p) != before[p] for p in paths)


def _relative(path: Path, root: Path) -> str:
    """An image's path in the dataset repo; the images table of a Hub release must stay inside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        raise DataError(
            f"{path}: an image path outside the dataset; a Hub release's images table names files inside it",
            file=schema.IMAGES,
        ) from None


def _complete(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


def _earlier_download(
    repo_id: str, local_dir: Path, config: DataConfig, revision: str | None, on_bad_row: str
) -> Path | None:
    """With the Hub out of reach (offline mode, no network): `local_dir` as it is when an earlier run completed
    the download of this dataset (at `revision`, when one is asked for); None when it holds none; a `DataError`
    when it holds an incomplete one."""
    record = local_dir / BENCH_RECORD
    if not record.is_file():
        return None
    held = json.loads(record.read_text())
    if held.get("hub_id") != repo_id or (revision and not held.get("revision", "").startswith(revision)):
        return None
    bench, *_ = read_tables(local_dir, config, on_bad_row)
    missing = [path for path in bench.images.path if not Path(path).is_file()]
    if missing:
        raise DataError(
            f"{repo_id}@{held['revision'][:12]} in {local_dir}: {len(missing)} referenced image(s) are missing, "
            f"e.g. {missing[0]}, and the Hub cannot be reached to fetch them (offline mode or no network)"
        )
    logger.info(
        "%s@%s: the Hub cannot be reached; using the complete download in %s",
        repo_id,
        held["revision"][:12],
        local_dir,
    )
    return local_dir


def download_bench(
    repo_id: str,
    local_dir: str | Path,
    config: DataConfig,
    revision: str | None = None,
    on_bad_row: str = "error",
) -> Path:
    """Download an LL-Bench release from the Hub into `local_dir` and return it, ready for `build_dataset`.

    The five tables come first and are validated with the data config (a missing column fails here, before
    any image is fetched); then exactly the image files the images table references.
    """
    from huggingface_hub import HfApi

    local_dir = Path(local_dir)
    api = HfApi()
    try:
        info = api.dataset_info(repo_id, revision=revision, files_metadata=True)
        sha = info.sha
        sizes = {s.rfilename: s.size for s in info.siblings or [] if s.size is not None}
        for name in TABLES:
            if config.files[name] not in sizes and name in OPTIONAL_TABLES:
                continue  # read as absent (llscore.data.tables)
            if config.files[name] not in sizes:
                raise DataError(
                    f"{repo_id}@{sha[:12]} has no {config.files[name]}; set files.{name} in the data config"
                )
            # tables are small: always checked against the revision (the client skips an unchanged file)
            api.hf_hub_download(
                repo_id, config.files[name], repo_type="dataset", revision=sha, local_dir=local_dir
            )
        check_column_map(local_dir, config)  # a column map that does not fit stops here, before any image
        bench, *_ = read_tables(local_dir, config, on_bad_row)
        images = [_relative(Path(p), bench.root) for p in bench.images.path]
        fetched = _fetch(api, repo_id, sha, images, local_dir, sizes)
    except DataError:
        raise
    except Exception as err:
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

        from llscore.hub import is_transport_error

        unreachable = is_transport_error(err) or isinstance(
            err, LocalEntryNotFoundError | OfflineModeIsEnabled
        )
        if unreachable and (earlier := _earlier_download(repo_id, local_dir, config, revision, on_bad_row)):
            return earlier
        if unreachable or type(err).__module__.startswith("huggingface_hub"):
            raise _hub_failure(repo_id, err) from err
        raise
    card = getattr(info, "card_data", None)
    record = {
        "name": "LL-Bench" if repo_id == LL_BENCH_HUB_ID else repo_id.split("/")[-1],
        "hub_id": repo_id,
        "revision": sha,
        **({"license": card.license} if card is not None and getattr(card, "license", None) else {}),
    }
    write_atomic(local_dir / BENCH_RECORD, json.dumps(record, indent=2) + "\n")
    logger.info(
        "%s@%s in %s: %d file(s) fetched, %d referenced images",
        repo_id,
        sha[:12],
        local_dir,
        fetched,
        len(images),
    )
    return local_dir
