"""Operations: `GET /health`, open to anyone, and `GET /metrics` for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ... import __version__
from ..schema import Health, Problem
from ..state import Server, authorised, server

router = APIRouter()


@router.get("/health", response_model=Health, summary="Liveness, and how many prompts are loaded")
async def health(state: Server = Depends(server)) -> Health:
    return Health(status="ok", version=__version__, loaded_prompts=state.service.loaded)


@router.get(
    "/metrics",
    dependencies=[Depends(authorised)],
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, 401: {"model": Problem}},
)
async def prometheus(state: Server = Depends(server)) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
