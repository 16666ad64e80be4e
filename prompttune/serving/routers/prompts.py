"""Registry prompts over prompttune's own endpoints: `POST /v1/classify` (labels, or tags for token
classification) and `POST /v1/generate`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from ...errors import PromptTuneError
from ...options import Endpoint
from ...tasks import task_class
from ...tasks.data import Example
from ...tasks.generation import check_generation_options
from ..limits import Limits
from ..schema import (
    ERRORS,
    ClassifyRequest,
    ClassifyResponse,
    GenerateRequest,
    GenerateResponse,
    Generation,
    TextPair,
)
from ..state import Server, authorised, server


async def classify(state: Server, body: ClassifyRequest) -> ClassifyResponse:
    inputs = [TextPair(text=x) if isinstance(x, str) else x for x in body.inputs]
    key, record = await state.resolve(body.prompt, Endpoint.CLASSIFY)
    task = task_class(record["task"])
    try:
        items = [(key, task.example_from_input(x.text, x.text_pair, f"input {i}")) for i, x in enumerate(inputs)]
    except PromptTuneError as error:
        raise HTTPException(400, str(error)) from None
    results = await state.submit((Endpoint.CLASSIFY,), items)
    for r in results:
        for label in task.predicted_labels(r):
            state.metrics.predictions.labels(key, label).inc()
    return ClassifyResponse(prompt=key, results=[{k: v for k, v in r.items() if k != "prompt"} for r in results])


async def generate(state: Server, body: GenerateRequest) -> GenerateResponse:
    limits = state.limits
    options = body.model_dump(exclude={"prompt", "inputs"}, exclude_none=True)
    if not options.get("do_sample"):
        options.pop("do_sample", None)
    key, record = await state.resolve(body.prompt, Endpoint.GENERATE)
    try:
        config = task_class(record["task"]).Config.from_dict(record["config"]["task_config"], where=key)
        settled = check_generation_options(options, config)
    except PromptTuneError as error:
        raise HTTPException(400, str(error)) from None
    sequences = max(settled["num_beams"], settled.get("num_return_sequences", 1))
    cost = len(body.inputs) * sequences * settled["max_new_tokens"]
    if cost > limits.max_request_tokens:
        raise HTTPException(
            413,
            f"this request decodes up to {cost} tokens ({len(body.inputs)} inputs x {sequences} "
            f"beams or sequences x {settled['max_new_tokens']} new tokens); at most "
            f"{limits.max_request_tokens} per request (the server's --max-request-tokens)",
        )
    items = [(key, Example(text=x, origin=f"input {i}")) for i, x in enumerate(body.inputs)]
    results = await state.submit((Endpoint.GENERATE, tuple(sorted(options.items()))), items)
    state.metrics.generated.labels(key).inc(sum(len(r) for r in results))
    return GenerateResponse(prompt=key, results=[Generation(generations=r) for r in results])


def router(limits: Limits) -> APIRouter:
    """The routes, with request models of this server's own that check its limits on the raw
    request, before its inputs are validated."""
    limited = {"limits": limits, "__module__": ClassifyRequest.__module__}
    classify_request = type("ClassifyRequest", (ClassifyRequest,), limited)
    generate_request = type("GenerateRequest", (GenerateRequest,), limited)
    routes = APIRouter(dependencies=[Depends(authorised)])

    async def classify_route(body, state: Server = Depends(server)) -> ClassifyResponse:
        return await classify(state, body)

    async def generate_route(body, state: Server = Depends(server)) -> GenerateResponse:
        return await generate(state, body)

    # Annotated here: the request models are made in this call, where a signature cannot name them.
    classify_route.__annotations__["body"] = classify_request
    generate_route.__annotations__["body"] = generate_request
    routes.post(
        f"/v1/{Endpoint.CLASSIFY}",
        name=Endpoint.CLASSIFY.value,
        response_model=ClassifyResponse,
        responses=ERRORS,
        summary="Classify texts, or tag their words, with a registry prompt",
    )(classify_route)
    routes.post(
        f"/v1/{Endpoint.GENERATE}",
        name=Endpoint.GENERATE.value,
        response_model=GenerateResponse,
        responses=ERRORS,
        summary="Generate text with a registry prompt",
    )(generate_route)
    return routes
