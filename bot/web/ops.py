"""Operations routes: health and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bot.metrics import CONTENT_TYPE, Metrics
from bot.web.health import check_health
from bot.web.schemas import ErrorOut, HealthOut

router = APIRouter()
METRICS_PATH = "/metrics"


@router.get(
    "/healthz",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "a dependency is unreachable; `failing` names it"}},
    summary="Database, queue and memory reachability",
)
async def healthz(request: Request) -> JSONResponse:
    checks = await run_in_threadpool(check_health, request.app.state.container)
    failing = [check.name for check in checks if not check.ok]
    body = {
        "status": "unavailable: " + ", ".join(failing) if failing else "ok",
        "failing": failing,
        "checks": {check.name: {"ok": check.ok, "detail": check.detail} for check in checks},
    }
    return JSONResponse(body, status_code=503 if failing else 200)


@router.get(
    METRICS_PATH,
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}},
        401: {
            "model": ErrorOut,
            "description": "METRICS_TOKEN is set and the bearer token is missing or wrong",
        },
        403: {"model": ErrorOut, "description": "METRICS_TOKEN is not set and the client is not on loopback"},
    },
    summary="Prometheus metrics (bearer METRICS_TOKEN, or loopback clients only when it is unset)",
)
async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    # Collectors may ask Redis for queue depth: off the event loop.
    body = await run_in_threadpool(registry.render)
    return Response(body, media_type=CONTENT_TYPE)
