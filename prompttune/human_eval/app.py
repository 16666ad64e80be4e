"""The raters' web page and its JSON API (FastAPI), over one study.

- `GET /`: where a rater gives their token (or, with `allow_names`, their name);
- `GET /rate/{token}`: the page, one task at a time, with keyboard shortcuts and progress;
- `GET /api/{token}/next`: the rater's next task (systems are never named, left and right as drawn);
- `POST /api/{token}/judgements`: one judgement, committed before the answer is sent; a double
  submit, a page out of date or a value that does not fit is refused with a message (409 or 422)
  and changes nothing; an unknown rater is a 404.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import re
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from ..gate import RequestGate
from .study import JudgementRefused, Study

PAGE = Path(__file__).with_name("page.html")
NO_STORE = {"Cache-Control": "no-store"}
MAX_BODY_BYTES = 64 * 1024  # a judgement is a few hundred bytes
BODY_TIMEOUT_S = 10.0
SQLITE_INT = 2**63 - 1
Count = Annotated[StrictInt, Field(ge=0, le=SQLITE_INT)]
Rating = Annotated[StrictInt, Field(ge=-SQLITE_INT, le=SQLITE_INT)]
PAGE_STYLE = "body{font-family:sans-serif;max-width:40em;margin:3em auto}"


class Judgement(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    study: str = Field(max_length=200, description="the study the page was showing (its id)")
    task: Count = Field(description="the task the page was showing")
    preference: Literal["left", "tie", "right"] | None = Field(None, description="a pairwise item's answer")
    ratings: dict[Annotated[str, Field(max_length=200)], Rating] | None = Field(
        None, max_length=64, description="a rating item's answer: criterion -> 1..scale"
    )
    seconds: float | None = Field(None, ge=0, le=10**9, description="time the rater spent on the task")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(_error_body("", status, message), status_code=status, headers=NO_STORE)


def _error_body(path: str, status: int, message: str) -> dict:
    return {"error": {"message": message, "status": status}}


def _inline_hashes(page: str, tag: str) -> str:
    """CSP sources allowing exactly the inline <tag> blocks of `page`."""
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.DOTALL)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{PAGE_STYLE}</style></head><body>{body}</body></html>",
        status_code=status,
        headers=NO_STORE,
    )


def security_headers(rater_page: str) -> dict:
    """What every answer of the raters' app carries: its pages run only their own inline script and
    styles and talk only to this server, are never framed, and send no Referer (the rater's token is
    in the page's address)."""
    styles = _inline_hashes(rater_page, "style") + " " + _inline_hashes(f"<style>{PAGE_STYLE}</style>", "style")
    policy = (
        f"default-src 'none'; script-src {_inline_hashes(rater_page, 'script')}; style-src {styles}; "
        "connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }


class RedactTokens(logging.Filter):
    """The access log without raters' tokens: `/rate/TOKEN` and `/api/TOKEN/...` are logged with
    the token replaced by `***` (whoever reads the log does not get to rate as someone else)."""

    PATTERN = re.compile(r"^(/rate/|/api/)[^/?]+|([?&]who=)[^&]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            args = list(record.args)
            args[2] = self.PATTERN.sub(lambda m: (m.group(1) or m.group(2)) + "***", args[2])
            record.args = tuple(args)
        return True


def build_app(study: Study, allow_names: bool = False, body_timeout: float = BODY_TIMEOUT_S) -> FastAPI:
    app = FastAPI(title="prompttune human evaluation", docs_url=None, redoc_url=None)
    rater_page = PAGE.read_text(encoding="utf-8")
    headers = security_headers(rater_page)
    app.add_middleware(
        RequestGate, max_bytes=MAX_BODY_BYTES, body_timeout=body_timeout, error_body=_error_body, size_hint=""
    )

    @app.middleware("http")
    async def secured(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, f"{where or 'body'}: {first.get('msg', 'invalid')}; nothing was recorded")

    app.include_router(_pages(study, allow_names, rater_page))
    app.include_router(_api(study))
    return app


def _pages(study: Study, allow_names: bool, rater_page: str) -> APIRouter:
    """The pages a rater sees: where they give their token (or name), and their rating page."""
    routes = APIRouter()
    asked = "your token" + (" or your name" if allow_names else "")

    @routes.get("/healthz")
    def health() -> dict:
        return {"status": "ok", "study": study.id}

    @routes.get("/", response_class=HTMLResponse)
    def start() -> HTMLResponse:
        return _page(
            "Human evaluation",
            f"<h1>Human evaluation</h1><form action='start' method='get'>"
            f"<label>Give {asked}: <input name='who' id='who' autofocus></label> "
            "<button>Start</button></form>",
        )

    @routes.get("/start")
    def login(who: str = ""):
        value = who.strip()
        rater = study.rater(token=value) if value else None
        token = value
        if rater is None and allow_names and value:
            rater = study.rater(name=value)
            token = next((r["token"] for r in study.raters() if r["name"] == rater), None)
        if rater is None:
            return _page(
                "Unknown rater",
                f"<h1>Unknown rater</h1><p>No rater of this study has the {asked} given. "
                "<a href='.'>Try again</a>.</p>",
                404,
            )
        return RedirectResponse(f"rate/{token}", status_code=303, headers=NO_STORE)

    @routes.get("/rate/{token}", response_class=HTMLResponse)
    def page(token: str) -> HTMLResponse:
        rater = study.rater(token=token)
        if rater is None:
            return _page(
                "Unknown rater",
                "<h1>Unknown rater</h1><p>This link does not belong to a rater of this "
                "study. <a href='..'>Start again</a>.</p>",
                404,
            )
        return HTMLResponse(rater_page.replace("{{RATER}}", html.escape(rater)), headers=NO_STORE)

    return routes


def _api(study: Study) -> APIRouter:
    """What the rating page asks for: a rater's next task, and their judgements."""
    routes = APIRouter()

    @routes.get("/api/{token}/next")
    def next_item(token: str):
        rater = study.rater(token=token)
        if rater is None:
            return _error(404, "no rater of this study has this token")
        return JSONResponse(study.next_task(rater), headers=NO_STORE)

    @routes.post("/api/{token}/judgements")
    def judge(token: str, judgement: Judgement):
        rater = study.rater(token=token)
        if rater is None:
            return _error(404, "no rater of this study has this token; nothing was recorded")
        try:
            recorded = study.submit(
                rater, judgement.study, judgement.task, judgement.preference, judgement.ratings, judgement.seconds
            )
        except JudgementRefused as refused:
            return _error(refused.status, str(refused))
        return JSONResponse({**recorded, "next": study.next_task(rater)}, headers=NO_STORE)

    return routes


def serve_study(
    folder: str,
    host: str = "127.0.0.1",
    port: int = 8100,
    allow_names: bool = False,
    log_level: str = "info",
    announce=print,
    body_timeout: float = BODY_TIMEOUT_S,
) -> None:
    import uvicorn

    study = Study(folder)
    app = build_app(study, allow_names, body_timeout)
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
    for rater in study.raters():
        announce(
            f"{rater['name']}: http://{host}:{port}/rate/{rater['token']} ({rater['done']} of {rater['tasks']} done)"
        )
    uvicorn.run(app, host=host, port=port, log_level=log_level)
