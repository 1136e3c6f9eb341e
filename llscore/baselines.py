"""pyiqa baseline metrics under the LL-Bench protocol (docs/evaluation.md), cached per image.

Result columns. A no-reference (NR) metric `m` scores the restored image: column `m`. A full-reference (FR)
metric gives two columns: `m@input` compares the restored image with the degraded input (fidelity to the
input) and `m@ref` with the clean reference (NaN where an item has none). When the other side's size differs
from the restored image's (e.g. a low-resolution input), it is resized to the restored size with antialiased
bicubic interpolation and clamped to [0, 1], so every metric sees the restored image untouched.

Values are pyiqa's raw outputs; `BaselineSpec.sign` (+1 higher is better, -1 lower is better, from pyiqa's
`lower_better`) orients them before correlating with human scores (`BaselineResults.oriented`).

A metric that cannot be created or run (weights that cannot be fetched, a missing dependency, ...) is
reported in `BaselineResults.unavailable` with the reason, never dropped silently and never fatal to the run.

Cache: one CSV per column under `cache_dir` (`image_id,key,value,check`). `key` hashes the bytes of the image files
the value depends on (restored, plus the degraded input or reference for FR) and the pyiqa version, so an
edited or replaced image is recomputed even under the same path and name, and a moved file is not. The file
is rewritten atomically after every batch, so an interrupted run resumes where it stopped, and evaluating
another checkpoint on the same images recomputes nothing. `check` hashes the row as written, so a damaged value
(cut short, emptied, edited) or a damaged header is found, logged and recomputed instead of being used.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import logging
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from huggingface_hub import constants as hub_constants
from tqdm.auto import tqdm

from llscore.errors import reason
from llscore.files import write_atomic
from llscore.images import read_image

logger = logging.getLogger(__name__)

# Everything pyiqa computes without downloaded weights, then the learned metrics (used where their weights
# are cached or can be fetched). niqe and brisque need parameter files that pyiqa downloads too.
CLASSIC_BASELINES = (
    "psnr",
    "ssim",
    "ms_ssim",
    "gmsd",
    "vif",
    "fsim",
    "vsi",
    "nlpd",
    "piqe",
    "niqe",
    "brisque",
)
LEARNED_BASELINES = ("lpips", "dists", "topiq_fr", "musiq", "maniqa", "clipiqa", "topiq_nr", "liqe", "qalign")
DEFAULT_BASELINES = CLASSIC_BASELINES + LEARNED_BASELINES

SIDES = {"input": "degraded", "ref": "reference"}  # FR column suffix -> item column of the compared image


@dataclass(frozen=True)
class BaselineSpec:
    """How one baseline is computed and read: its pyiqa id, NR or FR, and its orientation."""

    name: str
    metric_id: str
    full_reference: bool
    lower_better: bool

    @property
    def sign(self) -> int:
        """Multiply raw values by this so that higher is better."""
        return -1 if self.lower_better else 1

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f"{self.name}@{side}" for side in SIDES) if self.full_reference else (self.name,)


def baseline_spec(name: str, metric_id: str | None = None) -> BaselineSpec:
    """Read mode and orientation from pyiqa's config table, without building (or downloading) the metric."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    metric_id = metric_id or name
    if metric_id not in DEFAULT_CONFIGS:
        raise KeyError(f"unknown pyiqa metric: {metric_id}")
    config = DEFAULT_CONFIGS[metric_id]
    return BaselineSpec(
        name=name,
        metric_id=metric_id,
        full_reference=config["metric_mode"] == "FR",
        lower_better=bool(config.get("lower_better", False)),
    )


def unknown_baselines(names: Sequence[str]) -> list[str]:
    """The names that are not pyiqa metrics (eval.py refuses them before scoring anything)."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    return [name for name in names if name not in DEFAULT_CONFIGS]


def column_spec(column: str) -> BaselineSpec:
    """The spec behind a result column (`m`, `m@input` or `m@ref`)."""
    return baseline_spec(column.split("@")[0])


@dataclass
class BaselineResults:
    """Raw per-image values (index image_id, one column per metric variant) and the metrics that could not run."""

    values: pd.DataFrame
    unavailable: dict[str, str] = field(default_factory=dict)

    def oriented(self) -> pd.DataFrame:
        """Values with every column's sign flipped where lower is better, so higher is better everywhere."""
        return self.values * pd.Series({c: column_spec(c).sign for c in self.values.columns}, dtype=float)


class WeightsNotCached(ConnectionError):
    """A download was attempted while downloads are off."""


@cache
def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def downloads_allowed(allow_download: bool | None = None) -> bool:
    """`None` means: allowed unless the Hub client is offline (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE, as
    `huggingface_hub` reads them) or the Hub is unreachable."""
    if allow_download is not None:
        return allow_download
    return not hub_constants.HF_HUB_OFFLINE and _hub_reachable()


_OFFLINE = contextvars.ContextVar("llscore_baselines_offline", default=False)


def _refuse_network(event: str, args: tuple) -> None:
    """Audit hook (docs/evaluation.md): while downloads are off, any name lookup or connection fails at once."""
    if _OFFLINE.get() and event in ("socket.getaddrinfo", "socket.connect"):
        target = args[0] if event == "socket.getaddrinfo" else args[1]
        raise WeightsNotCached(f"not in the local cache and downloads are off ({event} {target!r})")


@cache
def _install_network_guard() -> None:
    sys.addaudithook(_refuse_network)


@contextlib.contextmanager
def no_downloads() -> Iterator[None]:
    """Offline, the Hub client and urllib wait and retry for ~50 s per file; here every download path pyiqa
    takes (its own weights, torch.hub backbones, CLIP, Hugging Face repos) fails at the first network call,
    through Python's `socket` audit events, while cached files still load. The socket guard covers this thread
    (threads it starts do not inherit it); the Hub client's offline switch is process-wide while the block runs,
    which `compute_baselines`, metric after metric in one thread, is built for."""
    _install_network_guard()
    token = _OFFLINE.set(True)
    hub_offline = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True  # the Hub client's own offline mode: cache only, no 23 s of retries
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pyiqa prints "Downloading: ..." before refusing
            yield
    finally:
        hub_constants.HF_HUB_OFFLINE = hub_offline
        _OFFLINE.reset(token)


def _create_metric(spec: BaselineSpec, device: str):
    import pyiqa

    return pyiqa.create_metric(spec.metric_id, device=device)


def _run(metric, target: torch.Tensor, other: torch.Tensor | None) -> list[float]:
    """One batched pyiqa call, as pyiqa's own calibration test makes it: `metric(dist, ref)`."""
    output = metric(target, other) if other is not None else metric(target)
    return output.detach().float().cpu().reshape(-1).tolist()


def _load(path: str, size: tuple[int, int] | None = None) -> torch.Tensor:
    # the repo's one decoder, scaled as pyiqa's imread2tensor scales
    image = torch.from_numpy(np.asarray(read_image(path))).permute(2, 0, 1).float() / 255
    if size is not None and tuple(image.shape[-2:]) != size:
        image = F.interpolate(image[None], size=size, mode="bicubic", align_corners=False, antialias=True)[0]
        image = image.clamp(0, 1)
    return image


class _Fingerprints:
    """Content hashes of image files, each file read once per run."""

    def __init__(self) -> None:
        import pyiqa

        self._version = pyiqa.__version__
        self._files: dict[str, str] = {}

    def file(self, path: str) -> str:
        if path not in self._files:
            self._files[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return self._files[path]

    def key(self, *paths: str) -> str:
        parts = [self._version, *(self.file(p) for p in paths)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _row_check(image_id: str, key: str, value: str) -> str:
    return hashlib.sha256(f"{image_id}\n{key}\n{value}".encode()).hexdigest()[:16]


class _ColumnCache:
    """One metric variant's cached values: image_id -> (key, value), persisted as CSV with a check per row."""

    COLUMNS = ("image_id", "key", "value", "check")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, tuple[str, float]] = {}
        if not path.exists():
            return
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            table = None
        if table is None or tuple(table.columns) != self.COLUMNS:
            logger.warning(
                "%s: unreadable or older-format baseline cache (no row checks); its values are recomputed",
                path,
            )
            return
        good = [_row_check(*row[:3]) == row[3] for row in table.itertuples(index=False)]
        if not all(good):
            logger.warning("%s: %d damaged cached value(s) are recomputed", path, good.count(False))
        self.rows = {
            r.image_id: (r.key, float(r.value))
            for r, ok in zip(table.itertuples(index=False), good, strict=True)
            if ok
        }

    def get(self, image_id: str, key: str) -> float | None:
        hit = self.rows.get(image_id)
        return hit[1] if hit is not None and hit[0] == key else None

    def save(self) -> None:
        rows = [(i, k, repr(float(v))) for i, (k, v) in self.rows.items()]
        table = pd.DataFrame([(*row, _row_check(*row)) for row in rows], columns=list(self.COLUMNS))
        write_atomic(self.path, table.to_csv(index=False))


@dataclass
class _Job:
    image_id: str
    key: str
    restored: str
    other: str | None


def _present(value) -> bool:
    return isinstance(value, str | Path) and str(value) != ""


def _prepare_items(items: pd.DataFrame) -> pd.DataFrame:
    missing = {"image_id", "restored"} - set(items.columns)
    if missing:
        raise ValueError(f"items lack columns {sorted(missing)}")
    items = items.copy()
    for column in SIDES.values():
        if column not in items.columns:
            items[column] = None
    items["image_id"] = items["image_id"].astype(str)
    if items["image_id"].duplicated().any():
        raise ValueError("image_id must be unique")
    return items


def _compute_metric(
    spec: BaselineSpec,
    items: pd.DataFrame,
    cache_dir: Path,
    fingerprints: _Fingerprints,
    device: str,
    batch_size: int,
    progress: bool,
) -> dict[str, pd.Series]:
    """All of one metric's columns: cached values reused, the rest computed in batches and cached as they come."""
    caches, values, pending = {}, {}, {}
    for column in spec.columns:
        side = SIDES[column.split("@")[1]] if spec.full_reference else None
        cache_ = caches[column] = _ColumnCache(cache_dir / f"{column}.csv")
        values[column] = pd.Series(float("nan"), index=items["image_id"], name=column)
        pending[column] = []
        for row in items.itertuples(index=False):
            other = getattr(row, side) if side else None
            if side and not _present(other):
                continue
            other = str(other) if side else None
            key = fingerprints.key(str(row.restored), *([other] if other else []))
            hit = cache_.get(row.image_id, key)
            if hit is None:
                pending[column].append(_Job(row.image_id, key, str(row.restored), other))
            else:
                values[column].loc[row.image_id] = hit

    total = sum(len(jobs) for jobs in pending.values())
    if total:
        metric = _create_metric(spec, device)
        with tqdm(total=total, desc=spec.name, disable=not progress) as bar:
            for column, jobs in pending.items():
                for start in range(0, len(jobs), batch_size):
                    batch = jobs[start : start + batch_size]
                    for job, value in zip(batch, _score_batch(metric, batch, device), strict=True):
                        caches[column].rows[job.image_id] = (job.key, value)
                        values[column].loc[job.image_id] = value
                    caches[column].save()
                    bar.update(len(batch))
    return values


def _score_batch(metric, batch: Sequence[_Job], device: str) -> list[float]:
    """Score a batch, stacking images of equal size into one call (sizes can differ within a benchmark)."""
    targets = [_load(job.restored) for job in batch]
    others = [
        _load(job.other, tuple(t.shape[-2:])) if job.other else None
        for job, t in zip(batch, targets, strict=True)
    ]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, target in enumerate(targets):
        groups.setdefault(tuple(target.shape[-2:]), []).append(i)
    out = [float("nan")] * len(batch)
    for indices in groups.values():
        target = torch.stack([targets[i] for i in indices]).to(device)
        other = (
            torch.stack([others[i] for i in indices]).to(device) if others[indices[0]] is not None else None
        )
        try:
            scores = _run(metric, target, other)
        except Exception as exc:  # e.g. images smaller than the metric's window: name the size
            raise RuntimeError(
                f"failed on {target.shape[-2]}x{target.shape[-1]} images: {reason(exc)[:300]}"
            ) from exc
        for i, value in zip(indices, scores, strict=True):
            out[i] = value
    return out


def compute_baselines(
    items: pd.DataFrame,
    names: Sequence[str] = DEFAULT_BASELINES,
    cache_dir: str | Path = "outputs/baseline_cache",
    device: str = "cpu",
    batch_size: int = 16,
    progress: bool = True,
    allow_download: bool | None = None,
) -> BaselineResults:
    """Compute (or read from the cache) every baseline for every item.

    `items` has columns image_id, restored (path) and optionally degraded and reference (path, or None/NaN
    where absent). `allow_download` as in `downloads_allowed`; when downloads are off, a metric whose files
    are not cached becomes unavailable at once instead of waiting on the network.
    """
    items = _prepare_items(items)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fingerprints = _Fingerprints()
    for column in ("restored", *SIDES.values()):
        for path in items[column]:
            if _present(path):
                fingerprints.file(str(path))  # a missing image fails here, not as every metric's "reason"
    guard = contextlib.nullcontext if downloads_allowed(allow_download) else no_downloads
    columns: dict[str, pd.Series] = {}
    unavailable: dict[str, str] = {}
    for name in names:
        try:
            spec = baseline_spec(name)
            with guard():
                columns.update(
                    _compute_metric(spec, items, cache_dir, fingerprints, device, batch_size, progress)
                )
        except Exception as exc:  # one failing metric must not stop the others; it is reported instead
            unavailable[name] = reason(exc)[:300]
    values = pd.DataFrame(columns, index=pd.Index(items["image_id"], name="image_id"))
    return BaselineResults(values=values, unavailable=unavailable)
