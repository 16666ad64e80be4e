"""OpenAI's API over registry prompts (prompttune/serving/openai_api.py has its request shapes):
`GET /v1/models`, `POST /v1/completions` and `POST /v1/chat/completions`, streamed or whole,
with errors in OpenAI's shape."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool

from ...errors import PromptTuneError
from ...options import Endpoint
from ...tasks import task_class
from ...tasks.data import Example
from ...tasks.generation import check_generation_options
from .. import openai_api
from ..openai_api import OpenAIError
from ..schema import ChatCompletionResponse, CompletionResponse, ModelList, OpenAIErrorBody
from ..state import Server, authorised, server
from ..streaming import CompletionStream

ERRORS = {status: {"model": OpenAIErrorBody} for status in (400, 401, 404, 409, 413, 500)}
STREAMED = {
    200: {
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": "the answer, or with stream true its server-sent events",
    }
}

router = APIRouter(dependencies=[Depends(authorised)])


async def _resolve(state: Server, spec: str) -> tuple[str, dict]:
    try:
        return await state.resolve(spec, Endpoint.GENERATE)
    except HTTPException as error:
        code = {404: "model_not_found"}.get(error.status_code)
        raise OpenAIError(error.status_code, f"model: {error.detail}", param="model", code=code) from None


def _check_sources(state: Server, sources: list[str]) -> None:
    limits = state.limits
    if len(sources) > limits.max_inputs:
        raise OpenAIError(
            413, f"prompt: {len(sources)} prompts; at most {limits.max_inputs} per request", param="prompt"
        )
    for i, text in enumerate(sources):
        if not isinstance(text, str) or not text.strip():
            raise OpenAIError(400, f"prompt {i}: the text is empty or only white space", param="prompt")
        if len(text) > limits.max_chars:
            raise OpenAIError(413, f"prompt {i}: {len(text)} characters; at most {limits.max_chars}", param="prompt")


async def _options(state: Server, body, sources: list[str]) -> tuple[str, dict]:
    """The prompt's NAME@VERSION and the decoding options the request asks for, checked against the
    server's limits and the prompt's task."""
    options = openai_api.generation_options(body)
    cost = len(sources) * (body.n or 1) * options["max_new_tokens"]
    if cost > state.limits.max_request_tokens:
        raise OpenAIError(
            413,
            f"this request decodes up to {cost} tokens ({len(sources)} prompts x n {body.n or 1} "
            f"x max_tokens {options['max_new_tokens']}); at most {state.limits.max_request_tokens}",
            param="max_tokens",
        )
    key, record = await _resolve(state, body.model)
    try:
        config = task_class(record["task"]).Config.from_dict(record["config"]["task_config"], where=key)
        check_generation_options({k: v for k, v in options.items() if k != "seed"}, config)
    except PromptTuneError as error:
        raise OpenAIError(400, str(error)) from None
    top = openai_api.requested_logprobs(body)
    if top is not None:
        if not state.continuous(options):
            raise OpenAIError(
                400,
                "logprobs: served on decoder-only models with continuous batching (the server's --batching continuous)",
                param="logprobs",
                code="unsupported_parameter",
            )
        options = {**options, "logprobs": top}
    return key, options


async def _generate(state: Server, body, sources: list[str], chat: bool):
    _check_sources(state, sources)
    key, options = await _options(state, body, sources)
    batch_key = ("openai", tuple(sorted(options.items())))
    if body.stream:
        return CompletionStream(state, key, sources, body, batch_key, options, chat).response()
    items = [(key, Example(text=text, origin=f"prompt {i}")) for i, text in enumerate(sources)]
    try:
        sequences = await state.submit(batch_key, items)
    except HTTPException as error:
        raise OpenAIError(error.status_code, str(error.detail)) from None
    state.metrics.generated.labels(key).inc(sum(len(s) for s in sequences))
    tokenizer = state.service.backbone.tokenizer
    return await run_in_threadpool(openai_api.completion_response, key, sequences, body, chat, tokenizer)


@router.get(
    "/v1/models",
    response_model=ModelList,
    responses=ERRORS,
    summary="OpenAI API: every prompt in the registry as a model (NAME, NAME@VERSION, NAME@ALIAS)",
)
async def models(state: Server = Depends(server)) -> dict:
    return await run_in_threadpool(openai_api.model_list, state.service.registry)


@router.post(
    "/v1/completions",
    response_model=CompletionResponse,
    responses={**ERRORS, **STREAMED},
    summary="OpenAI API: complete texts with a registry prompt",
)
async def completions(body: openai_api.CompletionRequest, state: Server = Depends(server)) -> dict:
    sources = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not sources:
        raise OpenAIError(400, "prompt: at least one prompt", param="prompt")
    openai_api.check_served(body)
    return await _generate(state, body, sources, chat=False)


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses={**ERRORS, **STREAMED},
    summary="OpenAI API: answer one user message with a registry prompt",
)
async def chat_completions(body: openai_api.ChatRequest, state: Server = Depends(server)) -> dict:
    openai_api.check_served(body)
    return await _generate(state, body, [openai_api.chat_source(body.messages)], chat=True)
