"""Recaptioning with a local causal language model (an HF folder in the `llm` model folder).

Invariants:
- Loaded with transformers (AutoTokenizer + AutoModelForCausalLM) from local files only; nothing
  is downloaded.
- The chat template is used when the tokenizer has one; otherwise a plain instruction prompt.
- Sampling is seeded inside `torch.random.fork_rng`, so the same (model, prompt, seed, settings)
  gives the same text and the caller's global RNG state is untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from engine.devices import on_device, pick_device


class LocalModelError(Exception):
    """The model folder cannot be loaded or produced nothing usable; `fix` says what to do."""

    def __init__(self, problem: str, fix: str):
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem}. {fix}")


def load_llm(folder: Path, device: torch.device | None = None) -> tuple[Any, Any]:
    """(tokenizer, model) from an HF causal-LM folder, model on the CPU in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise LocalModelError(f"{folder} is not a model folder (no config.json)",
                              "Choose a Hugging Face causal LM folder inside the llm model folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        dtype = torch.float32 if pick_device(device).type == "cpu" else torch.bfloat16
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types; name the folder
        raise LocalModelError(f"cannot load the language model in {folder}: {exc}",
                              "Check that the folder holds a complete causal LM with its tokenizer") \
            from exc
    return tokenizer, model.eval()


def build_prompt_ids(tokenizer: Any, system: str, prompt: str) -> torch.Tensor:
    """Token ids (1, T) of the request: chat template when present, else a plain instruction."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    else:
        text = f"{system}\n\nPrompt: {prompt}\nCaption:"
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
    return ids.long()


def generate(folder: Path, system: str, prompt: str, *, seed: int, max_new_tokens: int = 256,
             temperature: float = 0.7, top_p: float = 0.9, device: torch.device | None = None) -> str:
    """The model's reply to `prompt` under `system`, decoded without special tokens and stripped."""
    tokenizer, model = load_llm(folder, device)
    dev = pick_device(device)
    ids = build_prompt_ids(tokenizer, system, prompt)  # (1, T)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sample = temperature > 0
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": sample,
                              "pad_token_id": pad}
    if sample:
        kwargs.update(temperature=temperature, top_p=top_p)
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), on_device(model, dev), torch.inference_mode():
        torch.manual_seed(seed)
        out = model.generate(input_ids=ids.to(dev), attention_mask=torch.ones_like(ids).to(dev),
                             **kwargs)  # (1, T + new)
    return tokenizer.decode(out[0, ids.shape[1]:].cpu(), skip_special_tokens=True).strip()
