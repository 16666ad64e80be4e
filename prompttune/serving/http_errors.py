"""Every error the server answers, in the shape its endpoint documents: FastAPI's validation
errors as 422s that quote at most a short prefix of what was sent (400s in OpenAI's shape on
OpenAI's endpoints), the request gate's refusals, and the 413 of a request over the limits."""

from __future__ import annotations

import json
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import openai_api
from .openai_api import OpenAIError
from .schema import TooLarge


def error_body(path: str, status: int, message: str) -> dict:
    """A refusal of the request gate, in the shape of the endpoint's other errors."""
    if path in openai_api.OPENAI_PATHS:
        return OpenAIError(status, message).body()
    if status == 422:  # the shape of FastAPI's own validation errors, as the schema declares them
        return {"detail": [{"loc": ["body"], "msg": message, "type": "value_error"}]}
    return {"detail": message}


UNION_BRANCHES = ("constrained-str", "str", "TextPair")


def _at(body, path: list):
    for part in path:
        try:
            body = body[part]
        except (KeyError, IndexError, TypeError):
            return None
    return body


def _echo(value, limit: int = 80):
    """What a validation error quotes of the request: short values as they are, long ones cut."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"... ({len(value)} characters)"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or Infinity
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters of JSON)"


async def too_large(request: Request, error: TooLarge) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=413)


async def openai_error(request: Request, error: OpenAIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    if request.url.path in openai_api.OPENAI_PATHS:  # OpenAI's clients read OpenAI's error shape
        shaped = OpenAIError(error.status_code, str(error.detail))
        return JSONResponse(shaped.body(), status_code=error.status_code, headers=error.headers)
    return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)


async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
    if request.url.path in openai_api.OPENAI_PATHS:
        first = (error.errors() or [{}])[0]
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        param = loc[0] if loc else None
        if first.get("type") == "json_invalid":  # its location is a character of the body, not a field
            at = loc[0] if loc else "?"
            reason = (first.get("ctx") or {}).get("error", "invalid JSON")
            message, param = f"body: not valid JSON at character {at} ({reason})", None
        elif first.get("type") == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {param}"
        else:
            message = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid')}"
        return JSONResponse(OpenAIError(400, message, param=param).body(), status_code=400)
    details = []
    for problem in error.errors():
        loc = list(problem.get("loc", ()))
        branch = next((i for i, part in enumerate(loc) if part in UNION_BRANCHES), None)
        if branch is not None:
            # An input is a text or a pair: report only the errors of the form it was sent in.
            item = _at(getattr(error, "body", None), loc[1:branch])
            if (loc[branch] == "TextPair") != isinstance(item, dict):
                continue
            del loc[branch]
        entry = {"loc": loc, "msg": problem.get("msg", ""), "type": problem.get("type", "")}
        if problem.get("type") == "string_pattern_mismatch":
            entry["msg"] = "the text is empty or only white space"
        if "input" in problem:
            entry["input"] = _echo(problem["input"])
        details.append(entry)
    return JSONResponse({"detail": details}, status_code=422)


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TooLarge, too_large)
    app.add_exception_handler(OpenAIError, openai_error)
    app.add_exception_handler(StarletteHTTPException, http_error)  # FastAPI's own and those its routing raises
    app.add_exception_handler(RequestValidationError, invalid)
