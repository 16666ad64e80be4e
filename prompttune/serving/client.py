"""A small Python client for `prompttune serve`.

from prompttune.serving.client import Client
client = Client("http://127.0.0.1:8000", token="...")
client.classify("sentiment@production", ["a gripping film", "dull"])
client.generate("e2e", ["name[Alimentum], area[city centre]"], num_beams=5)
"""

from __future__ import annotations

import time

import httpx

from ..errors import PromptTuneError


class ServerError(PromptTuneError):
    """The server answered with an error status; `status` and the server's message."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs):
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise ServerError(response.status_code, detail if isinstance(detail, str) else str(detail))
        return response

    def classify(self, prompt: str, inputs: list[str | tuple[str, str]]) -> list[dict]:
        """Per input, what the prompt's task reads: {"label", "probabilities"} for classification,
        {"tokens", "tags", "entities"} for token classification. A tuple input is a (text, text_pair) pair."""
        body = {
            "prompt": prompt,
            "inputs": [x if isinstance(x, str) else {"text": x[0], "text_pair": x[1]} for x in inputs],
        }
        return self._call("POST", "/v1/classify", json=body).json()["results"]

    def generate(self, prompt: str, inputs: list[str], **options) -> list[list[str]]:
        """Per input, its generations. `options`: max_new_tokens, num_beams, do_sample, top_k, top_p,
        temperature, num_return_sequences, repetition_penalty, no_repeat_ngram_size, length_penalty."""
        body = {"prompt": prompt, "inputs": list(inputs), **options}
        return [r["generations"] for r in self._call("POST", "/v1/generate", json=body).json()["results"]]

    def prompts(self) -> list[dict]:
        return self._call("GET", "/v1/prompts").json()

    def health(self) -> dict:
        return self._call("GET", "/health").json()

    def wait_ready(self, timeout: float = 120.0, process=None) -> dict:
        """Poll /health until the server answers (it loads the model first); `process`, a
        `subprocess.Popen` running the server, stops the wait early if it exits."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.health()
            except (httpx.HTTPError, ServerError):
                pass
            if process is not None and process.poll() is not None:
                raise PromptTuneError(f"the server exited with status {process.returncode} before it was ready")
            if time.monotonic() > deadline:
                raise PromptTuneError(f"the server at {self._http.base_url} was not ready after {timeout:.0f} s")
            time.sleep(0.3)

    def metrics(self) -> str:
        return self._call("GET", "/metrics").text
