"""Recaptioning: a short prompt -> a dense caption, the job Sora's recaptioner does before encoding.

Backends:
- "builtin": offline, deterministic, grammar based (engine.recaption.builtin);
- "local": a causal LM folder in the `llm` model folder (engine.recaption.local_llm);
- "openai": any OpenAI-compatible /v1/chat/completions endpoint (engine.recaption.openai_compat).

The LLM backends get the same instruction (`system_prompt`), in the spirit of Wan's prompt
extender: keep the user's meaning and words; add subject, setting, motion, camera, lighting and
style; 80-100 words. Their replies are tidied (`tidy_caption`) and capped at `max_words`.

Invariants: an empty prompt gives an empty caption from every backend; a failing backend raises
`RecaptionError` (a NodeError naming the backend and the fix) unless `on_error="use prompt"`, in
which case the prompt comes back unchanged and a warning is logged.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Callable

from engine.errors import NodeError
from engine.recaption.builtin import GRAMMARS, builtin_caption
from engine.recaption.openai_compat import DEFAULT_BASE_URL, EndpointError, chat_completion

BACKENDS = ("builtin", "local", "openai")
ON_ERROR = ("raise", "use prompt")
_LOG = logging.getLogger("reelgraph.recaption")
_LABEL = re.compile(r"^\s*(?:dense\s+)?(?:caption|prompt|rewritten prompt)\s*:\s*", re.IGNORECASE)


class RecaptionError(NodeError):
    """A recaption backend failed; the message names the backend, the cause and the fix."""

    def __init__(self, backend: str, problem: str, fix: str, input: str | None = None):
        self.backend = backend
        super().__init__(f"Recaption ({backend}): {problem}. {fix}. Or set on_error to "
                         f"'use prompt' to continue with the prompt unchanged.", input=input)


def system_prompt(max_words: int = 100) -> str:
    """The instruction every LLM backend receives."""
    low = max(1, round(max_words * 0.8))
    return ("You rewrite short prompts for a text-to-video model as one dense video caption. "
            "Keep the user's meaning, subjects and key words; never drop or contradict them. "
            "Add concrete visual detail: the subject's appearance, the setting, the motion and "
            "action, the camera framing and movement, the lighting, and the visual style. "
            f"Write {low} to {max_words} words of plain English prose in the present tense, with "
            "no lists, headings, quotes or commentary. Reply with the caption only.")


def tidy_caption(text: str, max_words: int) -> str:
    """One paragraph, no "Caption:" label or wrapping quotes, at most `max_words` words (cut at
    the last full sentence when that keeps at least half of them)."""
    text = _LABEL.sub("", " ".join(text.split())).strip().strip('"“”\'').strip()
    words = text.split()
    if len(words) <= max_words:
        return text
    cut = " ".join(words[:max_words])
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "), len(cut) - 1 if cut[-1] in ".!?" else -1)
    if end >= 0 and len(cut[: end + 1].split()) >= max_words // 2:
        return cut[: end + 1]
    return cut.rstrip(",;:") + "."


def recaption(prompt: str, backend: str = "builtin", *, seed: int = 0, max_words: int = 100,
              on_error: str = "raise", grammar: str = "dense", llm: Path | str | None = None,
              model_paths: Any = None, max_new_tokens: int = 256, temperature: float = 0.7,
              base_url: str = DEFAULT_BASE_URL, model_name: str = "",
              api_key_env: str = "", timeout: float = 60.0, device: Any = None,
              warn: Callable[[str], None] | None = None) -> str:
    """The dense caption of `prompt` from `backend`.

    `llm` names the local model: a path, or a name resolved with `model_paths` under kind "llm".
    `api_key_env` is the NAME of the environment variable holding the key, read only when sending
    (none by default: which endpoint may get which key is decided by engine.providers).
    `warn` receives the message when a failure falls back to the prompt (the node passes its
    run log, so the user sees it; without one it goes to Python's logging).
    """
    if backend not in BACKENDS:
        raise RecaptionError(backend, "unknown backend", f"Choose one of {', '.join(BACKENDS)}",
                             input="backend")
    if on_error not in ON_ERROR:
        raise RecaptionError(backend, f"unknown on_error {on_error!r}",
                             f"Choose one of {', '.join(ON_ERROR)}", input="on_error")
    if not prompt.strip():
        return ""
    try:
        if backend == "builtin":
            return _builtin(prompt, seed, max_words, grammar)
        if backend == "local":
            from engine.recaption.local_llm import generate  # torch/transformers only when used

            path = _resolve_llm(llm, model_paths)
            text = generate(path, system_prompt(max_words), prompt, seed=seed,
                            max_new_tokens=max_new_tokens, temperature=temperature, device=device)
        else:
            messages = [{"role": "system", "content": system_prompt(max_words)},
                        {"role": "user", "content": prompt}]
            text = chat_completion(base_url, model_name, messages, api_key_env=api_key_env,
                                   seed=seed, temperature=temperature, max_tokens=max_new_tokens,
                                   timeout=timeout)
        caption = tidy_caption(text, max_words)
        if not caption:
            raise RecaptionError(backend, "the model returned an empty caption",
                                 "Try another seed or model, or raise max_new_tokens")
        return caption
    except Exception as exc:  # noqa: BLE001 - any backend failure may fall back on request
        error = _as_recaption_error(backend, exc)
        if on_error == "use prompt":
            message = f"{error}; using the prompt unchanged"
            if warn is not None:
                warn(message)
            else:
                _LOG.warning("%s", message)
            return prompt
        raise error from exc


def _builtin(prompt: str, seed: int, max_words: int, grammar: str) -> str:
    if grammar not in GRAMMARS:
        raise RecaptionError("builtin", f"unknown grammar {grammar!r}",
                             f"Choose one of {', '.join(GRAMMARS)}", input="grammar")
    return builtin_caption(prompt, seed=seed, max_words=max_words, grammar=grammar)


def _resolve_llm(llm: Path | str | None, model_paths: Any) -> Path:
    if llm is None or not str(llm).strip():
        raise RecaptionError("local", "no language model chosen",
                             "Pick a causal LM folder from the llm model folder", input="model")
    path = Path(str(llm)).expanduser()
    if path.is_absolute():
        return path
    if model_paths is None:
        raise RecaptionError("local", f"cannot find model {llm!r}: no model folders configured",
                             "Give an absolute path or configure a model root", input="model")
    return model_paths.resolve("llm", str(llm))


def _as_recaption_error(backend: str, exc: Exception) -> RecaptionError:
    from engine.recaption.local_llm import LocalModelError

    if isinstance(exc, RecaptionError):
        return exc
    if isinstance(exc, (EndpointError, LocalModelError)):
        return RecaptionError(backend, exc.problem, exc.fix)
    if isinstance(exc, NodeError):  # e.g. the model name did not resolve
        return RecaptionError(backend, str(exc).rstrip("."), "Fix the model choice", input=exc.input)
    return RecaptionError(backend, f"{type(exc).__name__}: {exc}",
                          "See the log for details; check the model and settings")
