"""Values that travel over links, and how tensor-carrying values flatten for the disk cache.

Conventions (shared by every node):
- IMAGE: float32 tensor (B, H, W, 3) in [0, 1], on the CPU.
- VIDEO: `Video` with frames (T, H, W, 3) float32 in [0, 1] on the CPU, plus fps.
- LATENT: `Latent` with samples (B, C, T', H', W') — T' latent frames on the VAE's spacetime grid —
  plus an optional per-latent-frame mask (B, T') where 1 marks a known (conditioning) frame whose
  clean value is in `known`.
- LATENT may carry `channel_cond` (B, C', T', H', W'): conditioning channels an image-channel model
  takes beside the noisy latent (mask + encoded frames).
- CONDITIONING: `Conditioning` with token embeddings (B, L, D) and an attention mask (B, L) for the
  positive prompt, and the same for the negative prompt (may be None when cfg is not used), plus
  optional CLIP image tokens `image_embeds` (B, N, D').
- CLIP_VISION_OUTPUT: `ClipVisionOutput` with the penultimate hidden states (B, N, D) of a CLIP
  vision encoder (what Wan's image embedder takes), the last hidden state and the projected embeds.

Every dataclass registered with `@spillable` can be flattened into named tensors plus JSON metadata
(and back), which is what lets the cache spill latents to safetensors on disk.

Importing this module imports neither torch nor numpy: a value can only be a tensor or an array
once its library is loaded, so `flatten` and `nbytes` look the libraries up in sys.modules and a
graph of plain values (or `validate`) never pays for torch.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_SPILLABLE: dict[str, type] = {}


def spillable(cls: type) -> type:
    """Register a dataclass whose fields are tensors, JSON values or other spillable values."""
    _SPILLABLE[cls.__name__] = cls
    return cls


@spillable
@dataclass
class Video:
    frames: torch.Tensor  # (T, H, W, 3) float32 in [0, 1]
    fps: float = 16.0

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return int(self.frames.shape[2]), int(self.frames.shape[1])


@spillable
@dataclass
class Latent:
    samples: torch.Tensor  # (B, C, T', H', W')
    frame_mask: torch.Tensor | None = None  # (B, T') 1 = known frame, kept fixed while denoising
    known: torch.Tensor | None = None  # (B, C, T', H', W') clean latents for known frames
    fps: float = 16.0
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. seed, pixel size, vae grid
    # (B, C', T', H', W') channels concatenated to the noisy latent at every model call: the mask +
    # encoded start/end frames of image-channel models (Wan 2.1 I2V/FLF2V-14B, Wan 2.2 I2V-A14B)
    channel_cond: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.samples.shape)


@spillable
@dataclass
class Conditioning:
    embeds: torch.Tensor  # (B, L, D)
    mask: torch.Tensor  # (B, L) 1 = real token
    negative_embeds: torch.Tensor | None = None
    negative_mask: torch.Tensor | None = None
    prompt: str = ""
    negative_prompt: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    # (B, N, D) CLIP vision tokens for models with an image embedder (`img_emb`), shared by the
    # positive and negative pass as in Wan
    image_embeds: torch.Tensor | None = None


@spillable
@dataclass
class ClipVisionOutput:
    """CLIP_VISION_OUTPUT: what a CLIP vision encoder made of a batch of images (float32, CPU)."""

    penultimate_hidden_states: torch.Tensor  # (B, N, D) hidden_states[-2]: the tokens Wan uses
    last_hidden_state: torch.Tensor | None = None  # (B, N, D)
    image_embeds: torch.Tensor | None = None  # (B, P) projected pooled embedding, if projected
    meta: dict[str, Any] = field(default_factory=dict)


# ---- flattening for the disk tier -----------------------------------------------------------

class NotSpillable(Exception):
    """The value holds something (a model, a handle) that cannot be written to disk."""


def flatten(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor in `value` into `tensors` and return JSON metadata describing the rest
    (`prefix` names where a value sits, for messages). Raises NotSpillable for anything else."""
    torch, np = sys.modules.get("torch"), sys.modules.get("numpy")
    # tensors are named by a counter: names built from the path alone collide ({"a.0": x} and
    # {"a": [y]} would both be "a.0"), and the checksum would then bless the wrong tensor
    if torch is not None and isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().cpu().contiguous()
        return {"$tensor": name}
    if np is not None and isinstance(value, np.ndarray):
        import torch  # the disk tier stores arrays as tensors

        name = f"t{len(tensors)}"
        tensors[name] = torch.from_numpy(np.ascontiguousarray(value))
        return {"$ndarray": name}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(value)]
        return {"$tuple": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise NotSpillable("dict with non-string keys")
        return {"$dict": {k: flatten(v, f"{prefix}.{k}", tensors) for k, v in value.items()}}
    cls_name = type(value).__name__
    if dataclasses.is_dataclass(value) and _SPILLABLE.get(cls_name) is type(value):
        fields = {f.name: flatten(getattr(value, f.name), f"{prefix}.{f.name}", tensors)
                  for f in dataclasses.fields(value)}
        return {"$dataclass": cls_name, "fields": fields}
    raise NotSpillable(f"{cls_name} cannot be stored on disk")


def unflatten(meta: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `flatten`."""
    if isinstance(meta, list):
        return [unflatten(v, tensors) for v in meta]
    if not isinstance(meta, dict):
        return meta
    if "$tensor" in meta:
        return tensors[meta["$tensor"]]
    if "$ndarray" in meta:
        return tensors[meta["$ndarray"]].numpy()
    if "$tuple" in meta:
        return tuple(unflatten(v, tensors) for v in meta["$tuple"])
    if "$dict" in meta:
        return {k: unflatten(v, tensors) for k, v in meta["$dict"].items()}
    if "$dataclass" in meta:
        cls = _SPILLABLE[meta["$dataclass"]]
        return cls(**{k: unflatten(v, tensors) for k, v in meta["fields"].items()})
    raise ValueError(f"unknown cache metadata {meta!r}")


def nbytes(value: Any) -> int:
    """Approximate memory held by a value (tensors, arrays, models with parameters)."""
    if value is None or type(value) in (bool, int, float):
        return 16
    torch, np = sys.modules.get("torch"), sys.modules.get("numpy")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if np is not None and isinstance(value, np.ndarray):
        return int(value.nbytes)
    if torch is not None and isinstance(value, torch.nn.Module):
        return sum(p.element_size() * p.nelement() for p in value.parameters()) + sum(
            b.element_size() * b.nelement() for b in value.buffers())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, str):
        return len(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    held = getattr(value, "nbytes", None)
    if isinstance(held, int):
        return held
    if hasattr(value, "__dict__"):
        return sum(nbytes(v) for v in vars(value).values())
    return 64
