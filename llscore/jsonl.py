"""The LL-Bench release's inference format (README.md, Using a trained evaluator): JSONL lines `{"id", "task",
"degraded_image", "restored_image"}` in, the same lines with `quality_score` and `hallucination_prob` (and
the checkpoint's own fields: the level distribution and its std, or the quality head's raw output) out. Image
paths are relative to the JSONL file's folder unless absolute."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llscore.errors import DataError

FIELDS = ("id", "task", "degraded_image", "restored_image")


@dataclass(frozen=True)
class ScoringRequest:
    """One JSONL line: its fields as given, and its two images resolved against the file's folder."""

    line: int
    fields: dict
    degraded: Path
    restored: Path


def read_requests(path: str | Path) -> list[ScoringRequest]:
    """Every non-blank line of `path`, checked before anything is scored: a line that is not a JSON object,
    lacks a field, repeats an id or names a missing image is one `DataError` naming its line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such JSONL file")
    requests, seen = [], {}
    # lines end at "\n" only (str.splitlines would also split at U+2028 inside a JSON string); a BOM is allowed
    for number, text in enumerate(path.read_text(encoding="utf-8-sig").split("\n"), start=1):
        if not text.strip():
            continue
        where = f"{path} line {number}"
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not valid JSON ({err.msg})") from err
        if not isinstance(fields, dict):
            raise DataError(f"{where}: a line is one JSON object with the fields {', '.join(FIELDS)}")
        missing = [name for name in FIELDS if name not in fields]
        if missing:
            raise DataError(f"{where}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        key = str(fields["id"])
        if key in seen:
            raise DataError(f"{where}: id {key!r} is also the id of line {seen[key]}")
        seen[key] = number
        images = {}
        for name in ("degraded_image", "restored_image"):
            image = path.parent / str(fields[name])  # an absolute path stays as it is
            if not image.is_file():
                raise DataError(f"{where}: {name} {fields[name]!r} is not a file ({image})")
            images[name] = image
        requests.append(ScoringRequest(number, fields, images["degraded_image"], images["restored_image"]))
    if not requests:
        raise DataError(f"{path}: no lines to score")
    return requests


def result_lines(requests: list[ScoringRequest], records: list[dict]) -> str:
    """Each request's fields as given, then `quality_score`, `hallucination_prob` and the rest of its scoring
    record (`std` and one `p_<level word>` per level, or a head checkpoint's `quality_logit`): one JSON object
    per line, in the input's order."""
    lines = []
    for request, record in zip(requests, records, strict=True):
        scored = {
            key: value for key, value in record.items() if key not in ("image", "score", "p_hallucination")
        }
        line = {
            **request.fields,
            "quality_score": record["score"],
            "hallucination_prob": record["p_hallucination"],
            **scored,
        }
        lines.append(json.dumps(line, ensure_ascii=False))
    return "\n".join(lines) + "\n"
