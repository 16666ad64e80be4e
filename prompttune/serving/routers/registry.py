"""The registry's contents: `GET /v1/prompts`."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from ..schema import ERRORS, PromptInfo
from ..state import Server, authorised, server

router = APIRouter(dependencies=[Depends(authorised)])


@router.get("/v1/prompts", response_model=list[PromptInfo], responses=ERRORS, summary="Every prompt in the registry")
async def prompts(state: Server = Depends(server)) -> list[PromptInfo]:
    return [PromptInfo(**row) for row in await run_in_threadpool(state.service.registry.list)]
