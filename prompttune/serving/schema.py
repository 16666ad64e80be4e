"""The HTTP API's request and response models: what the OpenAPI schema publishes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model, model_validator

from ..decoding import request_fields
from ..options import Endpoint

if TYPE_CHECKING:
    from .limits import Limits

# A text must hold something besides white space (Python's notion of it, which the server applies).
Text = Annotated[str, StringConstraints(pattern=r"\S"), Field(description="text with at least one non-space character")]
PromptName = Annotated[
    str,
    StringConstraints(max_length=300),
    Field(description="NAME, NAME@VERSION or NAME@ALIAS in the registry", examples=["sentiment@production"]),
]


class _Strict(BaseModel):
    # Strict: a number is a JSON number and a flag a JSON boolean ("5" is not 5, 1 is not true).
    model_config = ConfigDict(extra="forbid", regex_engine="python-re", allow_inf_nan=False, strict=True)


class TooLarge(Exception):
    """A request over the server's limits: answered 413 before its inputs are validated or run."""


class _Bounded(_Strict):
    """Counts and lengths of `inputs` checked before any input is validated (a list of millions of
    items is refused at once); a subclass made per server carries its limits."""

    limits: ClassVar[Limits | None] = None

    @model_validator(mode="before")
    @classmethod
    def _within_limits(cls, data):
        limits = cls.limits
        if limits is None or not isinstance(data, dict) or not isinstance(data.get("inputs"), list):
            return data
        inputs = data["inputs"]
        if len(inputs) > limits.max_inputs:
            raise TooLarge(f"{len(inputs)} inputs; at most {limits.max_inputs} per request")
        for i, item in enumerate(inputs):
            texts = (
                [item]
                if isinstance(item, str)
                else [item.get(k) for k in ("text", "text_pair")]
                if isinstance(item, dict)
                else []
            )
            for text in texts:
                if isinstance(text, str) and len(text) > limits.max_chars:
                    raise TooLarge(f"input {i}: {len(text)} characters; at most {limits.max_chars} per text")
        return data


class TextPair(_Strict):
    text: Text = Field(description="the input text")
    text_pair: Text | None = Field(None, description="the second text, for prompts that classify pairs")


class ClassifyRequest(_Bounded):
    prompt: PromptName
    inputs: list[Text | TextPair] = Field(
        min_length=1, description="texts, or objects with text and text_pair (at most the server's --max-inputs)"
    )


def _classify_results():
    """What /v1/classify answers per input: the result shape of every task it serves (a label and
    its probabilities for classification; tokens, tags and entities for token classification)."""

    from ..tasks import TASKS

    shapes = tuple(cls.result_type for cls in TASKS.values() if cls.endpoint is Endpoint.CLASSIFY)
    return Union[shapes] if len(shapes) > 1 else shapes[0]  # noqa: UP007 (a union built from a tuple)


class ClassifyResponse(BaseModel):
    prompt: str = Field(description="the version that answered, NAME@VERSION")
    results: list[_classify_results()]


GenerateRequest = create_model(
    "GenerateRequest",
    __base__=_Bounded,
    __module__=__name__,
    prompt=(PromptName, ...),
    inputs=(list[Text], Field(min_length=1, description="source texts (at most the server's --max-inputs)")),
    **request_fields(),
)


class Generation(BaseModel):
    generations: list[str]


class GenerateResponse(BaseModel):
    prompt: str = Field(description="the version that answered, NAME@VERSION")
    results: list[Generation]


class PromptInfo(BaseModel):
    name: str
    latest: int
    versions: int
    method: str
    task: str
    pushed: str
    aliases: dict[str, int]


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail


class ModelCard(BaseModel):
    id: str
    object: str
    created: int
    owned_by: str
    task: str
    method: str
    base_model: str | None = None


class ModelList(BaseModel):
    object: str
    data: list[ModelCard]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: dict | None = None
    finish_reason: str


class CompletionResponse(BaseModel):
    id: str
    object: str
    created: int
    model: str
    choices: list[CompletionChoice]
    system_fingerprint: str | None = None
    usage: Usage


class AssistantMessage(BaseModel):
    role: str
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: dict | None = None
    finish_reason: str


class ChatCompletionResponse(BaseModel):
    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChoice]
    system_fingerprint: str | None = None
    usage: Usage


class Health(BaseModel):
    status: str
    version: str
    loaded_prompts: int


class Problem(BaseModel):
    detail: str


ERRORS = {status: {"model": Problem} for status in (400, 401, 404, 409, 413, 500)}
