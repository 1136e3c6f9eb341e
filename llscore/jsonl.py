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


def _not_json(constant: str):
    """`json.loads` takes NaN, Infinity and -Infinity, which JSON has not (written back, they would make the
    output invalid JSON): refused."""
    raise ValueError(f"{constant} is not a JSON value")


def read_requests(path: str | Path) -> list[ScoringRequest]:
    """Every non-blank line of `path`, checked before anything is scored: a line that is not a JSON object,
    lacks a field, repeats an id or names a missing image is one `DataError` naming its line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such JSONL file")
    requests, seen = [], {}
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")  # a BOM is allowed
    # lines end at "\n" only (str.splitlines would also split at U+2028 inside a JSON string)
    for number, raw in enumerate(data.split(b"\n"), start=1):
        where = f"{path} line {number}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:  # a latin-1 file, say: name the line, not only the byte offset
            raise DataError(
                f"{where}: not UTF-8 text (0x{raw[err.start]:02x} at byte {err.start + 1} of the line)"
            ) from err
        if not text.strip():
            continue
        try:
            fields = json.loads(text, parse_constant=_not_json)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not valid JSON ({err.msg})") from err
        except ValueError as err:
            raise DataError(f"{where}: not valid JSON ({err})") from err
        if not isinstance(fields, dict):
            raise DataError(f"{where}: a line is one JSON object with the fields {', '.join(FIELDS)}")
        missing = [name for name in FIELDS if name not in fields]
        if missing:
            raise DataError(f"{where}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        key = json.dumps(fields["id"], sort_keys=True)  # 1 and "1" are two ids, as they are two JSON values
        if key in seen:
            raise DataError(f"{where}: id {fields['id']!r} is also the id of line {seen[key]}")
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
