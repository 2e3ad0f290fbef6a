"""The contracts between pipeline stages: what a loaded DiT, VAE and text encoder offer to nodes.

Loaders (engine.models.*) return objects satisfying these protocols; the sampling loop, the
conditioning helpers and the nodes depend only on these, never on a concrete architecture class.
All tensors cross these boundaries as float32 on the CPU unless stated; each model moves inputs to
its own device/dtype and back (that is where the offload policy lives).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: node modules import these contracts without torch
    import torch


@dataclass(frozen=True)
class LatentGrid:
    """How pixels map to latents for a VAE + DiT pair.

    frames F (must be 4n+1 for temporal=4) -> latent frames (F - 1) // temporal + 1;
    height/width must be multiples of spatial * patch (the DiT's spatial patch size).
    """

    channels: int = 16  # VAE z_dim
    temporal: int = 4  # temporal compression
    spatial: int = 8  # spatial compression
    patch: int = 2  # DiT spatial patch size (so sizes must be multiples of spatial * patch)

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.temporal + 1

    def pixel_frames(self, latent_frames: int) -> int:
        return (latent_frames - 1) * self.temporal + 1


@dataclass(frozen=True)
class ModelInfo:
    """Provenance of a loaded model: written into outputs and into cache keys."""

    path: str
    family: str  # e.g. "wan2.1-t2v", "wan2.2-ti2v", "wan-vae-2.1", "umt5", "bert-sentence"
    layout: str  # key layout the file used: "original" | "comfyui" | "diffusers" | "hf"
    sha256: str = ""  # content hash (may be a fast partial hash, see engine.models.safe_load)
    config: dict[str, Any] | None = None


@runtime_checkable
class DiffusionModel(Protocol):
    info: ModelInfo
    in_channels: int  # channels of x the transformer takes (latent + any conditioning channels)
    out_channels: int  # latent channels it predicts
    text_dim: int  # width of the text embeddings it expects
    # True when the model takes a timestep per latent frame (Wan 2.2 TI2V): known frames then get
    # timestep 0 and stay clean; otherwise the sampler re-noises them to the current level.
    frame_timesteps: bool

    def predict_velocity(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                         context_mask: torch.Tensor | None = None,
                         image_latent: torch.Tensor | None = None,
                         image_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Flow-matching velocity.

        x: (B, C, T, H, W) noisy latent; timestep: (B,) in [0, 1000], or (B, T) per latent frame
        (known frames get 0, as in Wan 2.2 TI2V); context: (B, L, D) text embeddings with mask (B, L);
        image_latent: optional (B, C', T, H, W) extra channels for I2V-style models (concatenated on
        the channel axis); image_embeds: optional (B, N, D') CLIP image tokens for models with an
        image embedder (None for every other model). Returns (B, out_channels, T, H, W) float32 on the CPU.
        """
        ...


@runtime_checkable
class VideoAutoencoder(Protocol):
    info: ModelInfo
    grid: LatentGrid

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, T, H, W, 3) float in [0, 1] -> normalised latents (B, C, T', H', W')."""
        ...

    def decode(self, latents: torch.Tensor, progress: Any = None) -> torch.Tensor:
        """normalised latents (B, C, T', H', W') -> frames (B, T, H, W, 3) float in [0, 1]."""
        ...


@runtime_checkable
class TextEncoderModel(Protocol):
    info: ModelInfo
    dim: int  # embedding width
    max_length: int

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """texts -> (embeds (B, L, D) float32, mask (B, L) long), padded to a common L."""
        ...


def model_path_str(path: Path | str) -> str:
    return str(Path(path))


def non_finite(t: "torch.Tensor") -> str | None:
    """"NaN" or "inf" when `t` holds one, else None (one reduction when all is well).

    Tensors crossing these boundaries are finite: a stage that meets NaN or inf stops with a node
    error naming who produced it, instead of passing it on to end as an all-black video.
    """
    if bool(t.isfinite().all()):
        return None
    return "NaN" if bool(t.isnan().any()) else "inf"


def non_finite_fix(model: Any) -> str:
    """What to tell the user when `model` computed NaN or inf."""
    policy = getattr(model, "policy", None)
    ran = f" (it computed in {policy.name})" if policy is not None else ""
    return f"the model file may be damaged, or fp16 overflowed — try bf16 or fp32{ran}"


def model_label(model: Any, kind: str) -> str:
    """"the DiT (wan_t2v.safetensors)" for error messages; just "the DiT" without a file."""
    info = getattr(model, "info", None)
    return f"the {kind} ({Path(info.path).name})" if info is not None else f"the {kind}"
