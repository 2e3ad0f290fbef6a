"""Recaptioning through any OpenAI-compatible chat endpoint (Ollama, llama.cpp server, vLLM, ...).

Invariants:
- Only http(s) URLs are contacted; the request is one POST to `<base>/chat/completions` with the
  standard library (no extra dependency).
- The API key is read from the environment variable the caller names, at call time (callers name
  only variables of providers the user configured: engine.providers); it is sent as a Bearer
  header and appears in no error message, log line, graph file or output — even when the server
  echoes it back, in an error or in the caption.
- Every failure raises `EndpointError` with a one-line cause a user can act on (server not running,
  HTTP status with the server's own message, time-out, malformed answer).
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_BASE_URL = "http://127.0.0.1:11434/v1"  # Ollama's OpenAI-compatible API


class EndpointError(Exception):
    """The endpoint could not be reached or gave no usable caption; `fix` says what to do."""

    def __init__(self, problem: str, fix: str):
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem}. {fix}")


def chat_url(base_url: str) -> str:
    """`.../chat/completions` for a base URL given with or without the `/v1` part or full path."""
    base = base_url.strip().rstrip("/")
    parsed = urllib.parse.urlparse(base)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise EndpointError(f"base URL {base_url!r} is not an http(s) URL",
                            "Give the server's address, e.g. http://127.0.0.1:11434/v1")
    if base.endswith("/chat/completions"):
        return base
    if parsed.path.rstrip("/").endswith("/v1"):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


def chat_completion(base_url: str, model: str, messages: list[dict[str, str]], *,
                    api_key_env: str = "", seed: int | None = None,
                    temperature: float = 0.7, max_tokens: int = 256, timeout: float = 60.0) -> str:
    """The assistant message of one chat completion, stripped. Raises EndpointError."""
    if not model.strip():
        raise EndpointError("no model name given", "Set model_name to a model the server serves "
                                                   "(e.g. `ollama list` shows them)")
    url = chat_url(base_url)
    body: dict[str, Any] = {"model": model, "messages": messages, "temperature": temperature,
                            "max_tokens": max_tokens, "stream": False}
    if seed is not None:
        body["seed"] = seed  # honoured by llama.cpp, vLLM and Ollama; ignored elsewhere
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    key = os.environ.get(api_key_env, "") if api_key_env else ""
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers,
                                     method="POST")
    try:
        return _without_key(_content(_send(request, url, api_key_env, key, timeout), url), key)
    except EndpointError as exc:  # a server may echo the key back in its error text
        raise EndpointError(_without_key(exc.problem, key), _without_key(exc.fix, key)) from None


def _without_key(text: str, key: str) -> str:
    """`text` with the API key, if a server echoed it, replaced by [redacted]."""
    return text.replace(key, "[redacted]") if len(key) >= 4 else text


def _send(request: urllib.request.Request, url: str, key_env: str, key: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        detail = _server_message(exc)
        if exc.code in (401, 403):
            fix = (f"Check the API key in the environment variable {key_env}"
                   if key else f"Set the environment variable {key_env} to your API key")
        elif exc.code == 404:
            fix = "Check base_url (it should end in /v1) and that the model name exists on the server"
        else:
            fix = "Check the server's log; the request used the standard chat completions format"
        raise EndpointError(f"{url} answered HTTP {exc.code} {exc.reason}{detail}", fix) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ConnectionRefusedError):
            raise EndpointError(f"connection refused at {url}",
                                "Start the server (e.g. `ollama serve`) or fix base_url") from None
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise _timed_out(url, timeout) from None
        raise EndpointError(f"cannot reach {url}: {reason}",
                            "Check base_url and that the server is running") from None
    except (socket.timeout, TimeoutError):
        raise _timed_out(url, timeout) from None
    except (ConnectionError, OSError) as exc:
        raise EndpointError(f"connection to {url} failed: {exc}",
                            "Check that the server is running and reachable") from None


def _timed_out(url: str, timeout: float) -> EndpointError:
    return EndpointError(f"no answer from {url} within {timeout:g} s",
                         "Raise timeout, use a smaller model, or check the server is not stuck")


def _server_message(exc: urllib.error.HTTPError) -> str:
    """The server's own error text (OpenAI-style {"error": {"message": ...}} or raw), one line."""
    try:
        raw = exc.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - a body we cannot read just adds nothing
        return ""
    try:
        data = json.loads(raw)
        err = data.get("error", data) if isinstance(data, dict) else data
        text = err.get("message", "") if isinstance(err, dict) else str(err)
    except json.JSONDecodeError:
        text = raw
    text = " ".join(str(text).split())[:200]
    return f": {text}" if text else ""


def _content(raw: bytes, url: str) -> str:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        snippet = raw[:80].decode("utf-8", "replace")
        raise EndpointError(f"{url} did not answer with JSON (got {snippet!r})",
                            "Check that base_url points at an OpenAI-compatible API") from None
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError(f"{url} answered without choices[0].message.content",
                            "Check that base_url points at an OpenAI-compatible chat API") from None
    if not isinstance(content, str) or not content.strip():
        raise EndpointError(f"{url} returned an empty caption",
                            "Try another model or a higher max_tokens")
    return content.strip()
