"""`llscore serve`: LL-Score as a reward service on Ray Serve (docs/serving.md).

One FastAPI ingress answers the four wire protocols (`llscore.serving.protocols`); requests from any of them
meet in one `@serve.batch` queue per replica, so concurrent clients share batches. Ray Serve places a replica
per GPU (or CPU share) across the nodes of a Ray cluster, restarts a replica that dies, and exposes its own
`/-/healthz` and `/-/routes` beside this service's `/health` (the process is up) and `/ready` (the model is
loaded and answers).

FastAPI reads the handlers' annotations at run time: this module does not postpone them.
"""

import asyncio
import hashlib
import hmac
import logging
import os
from dataclasses import dataclass, field

import psutil
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from starlette.requests import ClientDisconnect

from llscore.serving.items import DegradedInputs, Item, Limits, Reading, score_items
from llscore.serving.protocols import PROTOCOLS

logger = logging.getLogger(__name__)

APP_NAME = "llscore"
TOKEN_VARIABLE = "LLSCORE_SERVE_TOKEN"
"""The environment variable holding the optional bearer token (never a command-line argument: `ps` shows those)."""


@dataclass(frozen=True)
class ServeSettings:
    """What each replica needs to load and answer; the token travels only as its SHA-256."""

    ckpt: str
    hallucination_weight: float = 1.0
    dtype: str = "float32"
    device: str | None = None
    degraded_dir: str | None = None
    limits: Limits = field(default_factory=Limits)
    max_batch_size: int = 16
    batch_wait_s: float = 0.005
    token_sha256: str | None = None


def token_digest(token: str | None) -> str | None:
    return None if not token else hashlib.sha256(token.encode()).hexdigest()


def authorised(headers, token_sha256: str | None) -> bool:
    """No token set, or `Authorization: Bearer <token>` whose digest matches (compared in constant time)."""
    if token_sha256 is None:
        return True
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token_digest(token) or "", token_sha256)


api = FastAPI(title="LL-Score reward service", docs_url=None, redoc_url=None)


class BodyTooLarge(ValueError):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it passes `limit` bytes (its declared length first)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is {int(declared):,} bytes, over the limit of {limit:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"the body passes the limit of {limit:,} bytes")
    return bytes(body)


def _encoded(protocol, payload, status: int = 200) -> Response:
    if isinstance(payload, bytes):
        return Response(payload, status_code=status, media_type=protocol.media_type)
    return JSONResponse(payload, status_code=status)


@serve.deployment(name="LLScoreService", max_ongoing_requests=64, health_check_period_s=5)
@serve.ingress(api)
class LLScoreService:
    """A replica: one frozen scorer, its registered degraded inputs, and a batch queue."""

    def __init__(self, settings: ServeSettings):
        from llscore.reward import LLScoreReward

        self.settings = settings
        self.registered = DegradedInputs(settings.degraded_dir, settings.limits)
        self.reward = LLScoreReward.from_pretrained(
            settings.ckpt,
            hallucination_weight=settings.hallucination_weight,
            batch_size=settings.max_batch_size,
            dtype=settings.dtype,
            device=settings.device,
        )
        self.score_batch.set_max_batch_size(settings.max_batch_size)
        self.score_batch.set_batch_wait_timeout_s(settings.batch_wait_s)
        self.process = psutil.Process()

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def score_batch(self, items: list[Item]) -> list[Reading]:
        # the model runs in a thread: the replica's event loop keeps answering health checks meanwhile
        return await asyncio.to_thread(score_items, self.reward, items, len(items))

    @api.get("/health")
    async def health(self) -> dict:
        return {"status": "ok"}

    @api.get("/ready")
    async def ready(self, request: Request):
        """The replica's model, its limits and its memory (what a load test watches for growth); behind the
        token, since it names the checkpoint's path."""
        if not authorised(request.headers, self.settings.token_sha256):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        scorer = self.reward.scorer
        return {
            "status": "ready",
            "checkpoint": self.settings.ckpt,
            "formulation": scorer.config.formulation,
            "score_range": list(scorer.config.prompts.score_range),
            "hallucination_weight": self.reward.hallucination_weight,
            "registered_degraded_inputs": len(self.registered),
            "routes": {name: protocol.route for name, protocol in PROTOCOLS.items()},
            "limits": {
                "max_request_bytes": self.settings.limits.max_request_bytes,
                "max_image_pixels": self.settings.limits.max_image_pixels,
            },
            "pid": os.getpid(),
            "rss_bytes": self.process.memory_info().rss,
        }

    @api.post("/{route:path}")
    async def score(self, route: str, request: Request) -> Response:
        protocol = next((p for p in PROTOCOLS.values() if p.route == "/" + route), None)
        if protocol is None:
            known = ", ".join(p.route for p in PROTOCOLS.values())
            return JSONResponse({"error": f"no protocol at /{route}; routes: {known}"}, status_code=404)
        if not authorised(request.headers, self.settings.token_sha256):
            return _encoded(protocol, protocol.refusal("missing or wrong bearer token"), 401)
        try:
            body = await _read_body(request, self.settings.limits.max_request_bytes)
            # reading decodes every image: in a thread, so health checks and other requests go on meanwhile
            items = await asyncio.to_thread(protocol.read, body, self.registered, self.settings.limits)
        except BodyTooLarge as err:
            return _encoded(protocol, protocol.refusal(str(err)), 413)
        except ClientDisconnect:
            return _encoded(protocol, protocol.refusal("the client closed before the body was complete"), 400)
        except (
            Exception
        ) as err:  # RequestError, or anything else a body provoked: the client's fault, not retried
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            return _encoded(protocol, protocol.refusal(message), 400)
        readings = await asyncio.gather(*(self.score_batch(item) for item in items))
        errors = [r.error for r in readings if r.error]
        if errors:
            logger.warning(
                "%s: %d of %d items not scored; first: %s",
                protocol.name,
                len(errors),
                len(readings),
                errors[0],
            )
        return _encoded(protocol, protocol.reply(list(readings)))


def start(
    settings: ServeSettings,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    cpus_per_replica: float = 1.0,
    gpus_per_replica: float = 0.0,
    ray_address: str | None = None,
):
    """Start (or join, with `ray_address`) a Ray instance and deploy the service; returns once it is ready."""
    import ray

    if ray_address is None:
        ray.init(include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    else:
        ray.init(address=ray_address, log_to_driver=False)
    global _started_ray
    _started_ray = ray_address is None
    serve.start(http_options={"host": host, "port": port})
    deployment = LLScoreService.options(
        num_replicas=replicas, ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica}
    )
    serve.run(deployment.bind(settings), name=APP_NAME, route_prefix="/", blocking=False)


_started_ray = False


def stop() -> None:
    """Take this service down: on a Ray instance this process started, Serve and the instance; on a cluster it
    joined, only this application (`serve.shutdown` would remove every application on the cluster)."""
    import ray

    if _started_ray:
        serve.shutdown()
    else:
        serve.delete(APP_NAME)
    ray.shutdown()
