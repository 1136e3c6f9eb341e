"""The wire protocols of the frameworks that train image models against a reward, each read into items and
answered from their readings (docs/serving.md cites the client code each one follows).

- Flow-GRPO (flow_grpo/rewards.py, `deqa_score_remote`): a pickled `{"images": [JPEG bytes]}`, optionally with
  "prompts" and "metadata"; answered with a pickled `{"outputs": [reward]}`.
- verl-omni (verl_omni/utils/reward_score/http_scorer_client.py): a pickled `{"images", "prompts", "metadata"}`;
  answered with a pickled `{"scores": [reward]}`, or `{"error": ...}` for a request that cannot be read.
- UniRL's reward service (unirl-reward-service/reward_service/schemas.py): JSON `{"requests": [{"history":
  [{"text", "image_b64"}, ...], "required_rewards", "metadata"}]}`; the last turn's image is scored, an
  earlier turn's image is its degraded input; answered with `{"results": [{"llscore": {...}}], "errors"}`.
- LL-Score's own JSON: `{"items": [{"restored", "degraded" | "degraded_id"}]}` (base64 images); answered with
  `{"results": [{"quality", "p_hallucination", "reward", "jpeg", "error"}]}`.

The degraded input of an item comes inline or by the id of one registered at start: the id may ride in the
metadata (`degraded_id`) or be the prompt itself, since verl-omni sends empty metadata and the prompt alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llscore.errors import LLScoreError
from llscore.serving.items import (
    DegradedInputs,
    Item,
    ItemError,
    Limits,
    PixelBudget,
    Reading,
    decode_base64,
    item_from,
)
from llscore.serving.safe_pickle import UnsafePickle, safe_dumps, safe_loads

REWARD_NAME = "llscore"
"""The reward's name where a protocol names rewards (UniRL's `required_rewards`)."""


class RequestError(LLScoreError):
    """A request that cannot be read at all: answered 400 with this one line, nothing scored."""


@dataclass(frozen=True)
class Protocol:
    """One wire protocol: its route, how its body becomes items, and how readings become its reply."""

    name: str
    route: str
    media_type: str
    read: Callable[[bytes, DegradedInputs, Limits], list[Item]]
    reply: Callable[[list[Reading]], bytes | dict]
    refusal: Callable[[str], bytes | dict]  # the body of a refused request (400), in the protocol's encoding


def _degraded_for(prompt, metadata, registered: DegradedInputs, budget: PixelBudget):
    """The degraded input named by an item's metadata (`degraded_id`, or inline `degraded` bytes) or by its
    prompt when the prompt is a registered id; None when neither names one. Never a path on this machine."""
    if isinstance(metadata, dict):
        if metadata.get("degraded") is not None:
            return metadata["degraded"]  # bytes, or an item error in `item_from`
        if metadata.get("degraded_id") is not None:
            return registered.get(metadata["degraded_id"], budget)
    if registered.knows(prompt):
        return registered.get(prompt, budget)
    return None


def _check_count(count: int, limits: Limits) -> None:
    if count > limits.max_items:
        raise RequestError(f"{count} items in one request; the limit is {limits.max_items}")


def _pickled_items(body: bytes, registered: DegradedInputs, limits: Limits) -> list[Item]:
    """Flow-GRPO's and verl-omni's pickled body: images, with prompts and metadata when sent (a list per image,
    or one dict for all)."""
    try:
        data = safe_loads(body)
    except UnsafePickle as err:
        raise RequestError(str(err)) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list | tuple):
        raise RequestError('the pickled body must be a dict with an "images" list of PNG or JPEG bytes')
    images = list(data["images"])
    _check_count(len(images), limits)
    budget = limits.budget()
    prompts = data.get("prompts") or [None] * len(images)
    metadata = data.get("metadata")
    metadata = metadata if isinstance(metadata, list | tuple) else [metadata] * len(images)
    if len(prompts) != len(images) or len(metadata) != len(images):
        raise RequestError(
            f"{len(images)} images, {len(prompts)} prompts and {len(metadata)} metadata: one of each per image"
        )
    items = []
    for i, (image, prompt, meta) in enumerate(zip(images, prompts, metadata, strict=True)):
        try:
            degraded = _degraded_for(prompt, meta, registered, budget)
        except ItemError as err:
            items.append(Item(error=f"images[{i}]: {err}"))
            continue
        items.append(item_from(image, degraded, limits, f"images[{i}]", budget))
    return items


def _unirl_items(body: bytes, registered: DegradedInputs, limits: Limits) -> list[Item]:
    data = _json_body(body)
    requests = data.get("requests") if isinstance(data, dict) else None
    if not isinstance(requests, list):
        raise RequestError('the body must be {"requests": [{"history": [...], "required_rewards": [...]}]}')
    _check_count(len(requests), limits)
    budget = limits.budget()
    items = []
    for i, request in enumerate(requests):
        where = f"requests[{i}]"
        history = request.get("history") if isinstance(request, dict) else None
        if not isinstance(history, list) or not history or not all(isinstance(t, dict) for t in history):
            items.append(Item(error=f"{where}: history must be a non-empty list of turns"))
            continue
        wanted = request.get("required_rewards") or [REWARD_NAME]
        if REWARD_NAME not in wanted:
            items.append(Item(error=f"{where}: this service serves the reward {REWARD_NAME!r}, not {wanted}"))
            continue
        try:
            restored = decode_base64(history[-1].get("image_b64"), f"{where}: the last turn's image_b64")
            earlier = [t["image_b64"] for t in history[:-1] if t.get("image_b64") is not None]
            if earlier:
                degraded = decode_base64(earlier[0], f"{where}: the first turn's image_b64")
            else:
                degraded = _degraded_for(history[-1].get("text"), request.get("metadata"), registered, budget)
        except ItemError as err:
            items.append(Item(error=str(err) if str(err).startswith(where) else f"{where}: {err}"))
            continue
        items.append(item_from(restored, degraded, limits, where, budget))
    return items


def _own_items(body: bytes, registered: DegradedInputs, limits: Limits) -> list[Item]:
    data = _json_body(body)
    entries = data.get("items") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise RequestError(
            'the body must be {"items": [{"restored": base64, "degraded" or "degraded_id": ...}]}'
        )
    _check_count(len(entries), limits)
    budget = limits.budget()
    items = []
    for i, entry in enumerate(entries):
        where = f"items[{i}]"
        try:
            if not isinstance(entry, dict):
                raise ItemError(f"{where}: expected an object with restored (base64)")
            restored = decode_base64(entry.get("restored"), f"{where}.restored")
            if entry.get("degraded") is not None:
                degraded = decode_base64(entry["degraded"], f"{where}.degraded")
            elif entry.get("degraded_id") is not None:
                degraded = registered.get(entry["degraded_id"], budget)
            else:
                degraded = None
        except ItemError as err:
            items.append(Item(error=str(err) if str(err).startswith(where) else f"{where}: {err}"))
            continue
        items.append(item_from(restored, degraded, limits, where, budget))
    return items


def _json_body(body: bytes):
    import json

    try:
        return json.loads(body)
    except (
        ValueError,
        RecursionError,
    ) as err:  # not JSON, not UTF-8, a number past int's digit limit, too deep
        raise RequestError(f"the body is not JSON LL-Score can read ({len(body)} bytes): {err}") from None


def _pickled_reply(reward_key: str, readings: list[Reading]) -> bytes:
    """Flow-GRPO's and verl-omni's reply: the rewards under the key their client reads, the rest beside."""
    return safe_dumps(
        {
            reward_key: [r.reward for r in readings],
            "quality": [r.quality for r in readings],
            "p_hallucination": [r.p_hallucination for r in readings],
            "jpeg": [r.jpeg for r in readings],
            "errors": [r.error for r in readings],
        }
    )


PROTOCOLS = {
    protocol.name: protocol
    for protocol in (
        Protocol(
            "flow_grpo",
            "/flow_grpo",
            "application/octet-stream",
            _pickled_items,
            lambda readings: _pickled_reply("outputs", readings),
            lambda message: safe_dumps({"error": message}),
        ),
        Protocol(
            "verl_omni",
            "/verl_omni",
            "application/octet-stream",
            _pickled_items,
            lambda readings: _pickled_reply("scores", readings),
            lambda message: safe_dumps({"error": message}),
        ),
        Protocol(
            "unirl",
            "/score",
            "application/json",
            _unirl_items,
            lambda readings: {
                "results": [{REWARD_NAME: _sub_metrics(r)} for r in readings],
                "errors": [{REWARD_NAME: r.error} if r.error else {} for r in readings],
            },
            lambda message: {"detail": message},
        ),
        Protocol(
            "llscore",
            "/v1/score",
            "application/json",
            _own_items,
            lambda readings: {"results": [r.to_json() for r in readings]},
            lambda message: {"error": message},
        ),
    )
}


def _sub_metrics(reading: Reading) -> dict[str, float | None]:
    """UniRL's sub-metrics, the reward first (its client's default reduction takes the first); a failed item's
    are null, as NaN travels in JSON, which its client counts as a failed sample."""
    fields = reading.to_json()
    return {name: fields[name] for name in ("reward", "quality", "p_hallucination")}
