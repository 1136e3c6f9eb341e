"""A thin client of `llscore serve`'s own JSON protocol, retrying as verl-omni's client does (docs/serving.md).

A request that fails for a reason a retry can cure (a connection refused or reset while a replica restarts;
HTTP 408, 429 or 5xx) is retried with a doubling delay; any other failure, or the last retry's, raises with
the server's one line. No request is dropped silently: each call returns one reading per image or raises.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import requests
from PIL import Image

from llscore.errors import LLScoreError

RETRYABLE = {408, 429}


def encode(image: str | Path | bytes | Image.Image) -> str:
    """Base64 of an image: a file's bytes as they are, a PIL image as PNG (lossless)."""
    if isinstance(image, bytes):
        data = image
    elif isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        data = Path(image).read_bytes()
    return base64.b64encode(data).decode("ascii")


class ServiceError(LLScoreError):
    """The service refused a request, or could not be reached in the retries allowed."""


class LLScoreClient:
    """`LLScoreClient("http://127.0.0.1:8000").score(restored, degraded)` → one reading dict per image:
    quality, p_hallucination, reward (None where not scored), jpeg, error."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        retries: int = 8,
        backoff_s: float = 0.5,
        timeout_s: float = 120,
    ):
        self.url = url.rstrip("/")
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s
        self.session = requests.Session()
        self.session.trust_env = False  # a reward service is on a local network: no proxy
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def score(
        self, restored: list, degraded: list | None = None, degraded_ids: list[str] | None = None
    ) -> list[dict]:
        items = []
        for i, image in enumerate(restored):
            item = {"restored": encode(image)}
            if degraded is not None and degraded[i] is not None:
                item["degraded"] = encode(degraded[i])
            elif degraded_ids is not None:
                item["degraded_id"] = degraded_ids[i]
            items.append(item)
        results = self.post("/v1/score", {"items": items})["results"]
        if len(results) != len(items):
            raise ServiceError(f"sent {len(items)} images, got {len(results)} readings")
        return results

    def ready(self) -> dict:
        return self._request("GET", "/ready")

    def post(self, route: str, payload: dict) -> dict:
        return self._request("POST", route, json=payload)

    def _request(self, method: str, route: str, **kwargs) -> dict:
        last = None
        for attempt in range(self.retries + 1):
            try:
                response = self.session.request(method, self.url + route, timeout=self.timeout_s, **kwargs)
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,  # a replica killed mid-answer
                requests.exceptions.ContentDecodingError,
            ) as err:
                last = f"{type(err).__name__}: {err}"
            else:
                if response.status_code == 200:
                    return response.json()
                last = f"HTTP {response.status_code}: {response.text[:500]}"
                if response.status_code not in RETRYABLE and response.status_code < 500:
                    raise ServiceError(f"{self.url}{route}: {last}")
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        raise ServiceError(f"{self.url}{route}: failed after {self.retries + 1} attempts; last: {last}")
