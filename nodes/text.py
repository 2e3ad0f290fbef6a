"""Text nodes: load a text encoder, encode prompts into CONDITIONING, recaption short prompts.

TEXT_ENCODER values satisfy engine.models.interfaces.TextEncoderModel; CONDITIONING values are
engine.values.Conditioning with (1, L, D) float32 embeddings, zero past the (1, L) mask, for the
prompt and (unless the negative input is left unset) the negative prompt. The encoder loaders
(torch, transformers) are imported when LoadTextEncoder runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.choices import DEVICE_CHOICES, TEXT_ENCODER_DTYPE_CHOICES
from engine.context import ExecutionContext
from engine.errors import NodeError
from engine.models.paths import BUNDLED_MINILM
from engine.providers import EndpointRefused, resolve_endpoint
from engine.recaption import BACKENDS, ON_ERROR, recaption
from engine.recaption.builtin import GRAMMARS
from engine.schema import Input, NodeSpec, NodeType, Output
from engine.sockets import SocketType as T
from engine.values import Conditioning

MAX_SEED = 2**31 - 1  # OpenAI-compatible servers take 32-bit seeds


def _fell_back(ctx: ExecutionContext, message: str) -> None:
    """The backend failed and the prompt goes on unchanged: say so, and keep that fallback out of
    the cache so the next run asks the backend again."""
    ctx.log("warning", message)
    ctx.skip_cache("the recaption backend failed; the prompt was used unchanged")


class LoadTextEncoder(NodeType):
    """Load a text encoder: the bundled all-MiniLM-L6-v2 sentence encoder (the demo model's), a
    T5/UMT5 model folder, or a single umt5-xxl file from ComfyUI or Wan (its tokenizer next to it:
    `<name>.tokenizer/`, `tokenizer/`, `google/umt5-xxl/` or `spiece.model`)."""

    spec = NodeSpec(
        name="LoadTextEncoder", display_name="Load Text Encoder", category="loaders",
        description=__doc__,
        inputs=(
            Input("model", T.STRING, BUNDLED_MINILM, file_kind="text_encoders",
                  tooltip="a file or model folder in text_encoders, or the bundled MiniLM"),
            Input("dtype", T.STRING, "auto", choices=TEXT_ENCODER_DTYPE_CHOICES,
                  tooltip="auto: bf16 on CUDA and on CPUs with fast bf16 (AMX / AVX512-BF16), "
                          "fp32 on other CPUs (the log says which and why), an fp8 file's Linears "
                          "kept 8-bit as stored; fp8: 8-bit weights "
                          "(a scaled-fp8 file's as stored, ~1 byte per weight), upcast per layer"),
            Input("max_length", T.INT, 0, min=0, max=4096,
                  tooltip="tokens per prompt, padding included; 0 = the model's own "
                          "(512 for T5/UMT5 as Wan uses, 256 for MiniLM)"),
            Input("offload", T.BOOL, True,
                  tooltip="keep the weights on the CPU between encodes (frees GPU memory for the DiT)"),
            Input("device", T.STRING, "auto", choices=DEVICE_CHOICES,
                  tooltip="where it encodes; auto = the run's device. cpu keeps the encoder off a "
                          "small GPU so the DiT has it all"),
        ),
        outputs=(Output("encoder", T.TEXT_ENCODER),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, model: str, dtype: str, max_length: int,
                offload: bool, device: str = "auto") -> dict[str, Any]:
        from engine.models.text_encoders import (load_text_encoder, resolve_text_encoder,
                                                 text_encoder_policy)
        from nodes.loaders import loader_device

        target = loader_device(ctx, device)
        try:
            path = resolve_text_encoder(model, ctx.model_paths)
            if device in ("", "auto") and getattr(target, "type", "cpu") == "cuda":
                target = cls._auto_device(ctx, Path(path), target)
            ctx.log("info", f"{Path(path).name}: {text_encoder_policy(target, dtype)[1]}")
            ctx.progress(0.0, f"loading {Path(path).name}")
            encoder = load_text_encoder(path, device=target, dtype=dtype,
                                        max_length=max_length or None, offload=offload)
        except NodeError as exc:
            exc.input = exc.input or "model"
            raise
        return {"encoder": encoder}

    @staticmethod
    def _auto_device(ctx: ExecutionContext, path: Path, target: Any) -> Any:
        """The CPU instead of a GPU too small for this encoder beside its working memory."""
        from engine.memory import settings_scope, text_encoder_device

        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() \
            else path.stat().st_size  # the weights as stored: fp8 files stay 8-bit under auto
        with settings_scope(ctx.settings):
            where, why = text_encoder_device(size, target)
        if where == "cpu":
            import torch

            ctx.log("info", f"{path.name}: encodes on the CPU ({why})")
            return torch.device("cpu")
        return target


class TextEncode(NodeType):
    """Encode a prompt and a negative prompt into CONDITIONING for DiTDenoise. An empty negative
    prompt is still encoded (it is the unconditional branch of classifier-free guidance)."""

    spec = NodeSpec(
        name="TextEncode", display_name="Text Encode", category="conditioning",
        description=__doc__,
        inputs=(
            Input("encoder", T.TEXT_ENCODER),
            Input("prompt", T.TEXT, "", multiline=True),
            Input("negative_prompt", T.TEXT, "", multiline=True, optional=True),
        ),
        outputs=(Output("conditioning", T.CONDITIONING),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, encoder: Any, prompt: str,
                negative_prompt: str | None = None) -> dict[str, Any]:
        texts = [prompt] if negative_prompt is None else [prompt, negative_prompt]
        ctx.progress(0.0, "encoding")
        embeds, mask = encoder.encode(texts)  # (1 or 2, L, D), (1 or 2, L): one batch, same L
        info = encoder.info
        cond = Conditioning(
            embeds=embeds[:1], mask=mask[:1],
            negative_embeds=embeds[1:] if negative_prompt is not None else None,
            negative_mask=mask[1:] if negative_prompt is not None else None,
            prompt=prompt, negative_prompt=negative_prompt or "",
            meta={"encoder_family": info.family, "encoder": Path(info.path).name,
                  "encoder_sha256": info.sha256, "max_length": int(encoder.max_length),
                  "dim": int(encoder.dim)})
        return {"conditioning": cond}


class Recaption(NodeType):
    """Rewrite a short prompt as a dense caption (subject, setting, motion, camera, lighting,
    style; about 80-100 words), as Sora's recaptioner does. Backends: builtin (offline,
    deterministic), local (a causal LM folder in the llm model folder) or openai (any
    OpenAI-compatible server: Ollama, llama.cpp, vLLM). For openai, choose one of your providers
    (Settings: each has an address and the environment variable holding its key — yours, never
    the workflow's). An address typed into base_url instead gets no key and runs only once you
    approve it. Results are cached by their inputs, so a remote model is asked again only when
    something changes: change the seed to re-roll."""

    spec = NodeSpec(
        name="Recaption", category="text", description=__doc__, version=2,
        inputs=(
            Input("prompt", T.TEXT, "", multiline=True),
            Input("backend", T.STRING, "builtin", choices=BACKENDS),
            Input("grammar", T.STRING, "dense", choices=tuple(GRAMMARS),
                  tooltip="builtin: the caption vocabulary and grammar"),
            Input("model", T.STRING, "", file_kind="llm", optional=True,
                  tooltip="local: a causal LM folder in the llm model folder"),
            Input("provider", T.STRING, "ollama-local",
                  tooltip="openai: one of your providers (Settings), e.g. ollama-local, openai"),
            Input("base_url", T.STRING, "",
                  tooltip="openai: an address that is not one of your providers (no key is "
                          "sent; runs only once you approve it); empty = the provider's"),
            Input("model_name", T.STRING, "", optional=True,
                  tooltip="openai: the model the server should use"),
            Input("seed", T.INT, 0, min=0, max=MAX_SEED, seed=True),
            Input("max_words", T.INT, 100, min=10, max=400),
            Input("max_new_tokens", T.INT, 256, min=16, max=4096,
                  tooltip="local/openai: the longest reply allowed"),
            Input("temperature", T.FLOAT, 0.7, min=0.0, max=2.0, step=0.05,
                  tooltip="local/openai: 0 = greedy"),
            Input("timeout", T.FLOAT, 60.0, min=1.0, max=600.0, tooltip="openai: seconds"),
            Input("on_error", T.STRING, "raise", choices=ON_ERROR,
                  tooltip="'use prompt' continues with the prompt unchanged when the backend fails"),
        ),
        outputs=(Output("caption", T.TEXT),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, prompt: str, backend: str, grammar: str,
                model: str | None, provider: str, base_url: str, model_name: str | None,
                seed: int, max_words: int, max_new_tokens: int, temperature: float,
                timeout: float, on_error: str) -> dict[str, Any]:
        ctx.progress(0.0, f"recaptioning ({backend})")
        endpoint = None
        if backend == "openai":
            try:
                endpoint = resolve_endpoint(provider, base_url, ctx.settings, ctx.approved_endpoints)
            except EndpointRefused as exc:
                raise NodeError(str(exc), input="base_url" if base_url.strip() else "provider") from None
        caption = recaption(prompt, backend, seed=seed, max_words=max_words, on_error=on_error,
                            grammar=grammar, llm=model or None, model_paths=ctx.model_paths,
                            max_new_tokens=max_new_tokens, temperature=temperature,
                            base_url=endpoint.url if endpoint else "",
                            model_name=model_name or "",
                            api_key_env=endpoint.key_env if endpoint else "", timeout=timeout,
                            device=ctx.device if backend == "local" else None,
                            warn=lambda message: _fell_back(ctx, message))
        return {"caption": caption}
