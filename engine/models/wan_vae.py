"""The Wan video VAE: key conversion, loading, and the `VideoAutoencoder` wrapper.

The architecture is diffusers' `AutoencoderKLWan` (2.1: z_dim 16, 8x spatial; 2.2: z_dim 48, 16x
spatial with a 2x2 patchified input). Checkpoints in Wan's original layout are renamed with a table
generated from the detected config (the numbering of Wan's flat block lists depends on the number
of levels and residual blocks, so no fixed table fits every VAE).

Invariants of `WanVAE`:
- Latents crossing the boundary are normalised per channel with the model's latent statistics:
  `(z - latents_mean) / latents_std`, as the DiT was trained on.
- Decoding is causal, one latent frame at a time (Wan's feature cache carries the past); each
  decoded chunk moves to the CPU at once, so device memory holds one chunk, not the clip. With
  `tile` set, large frames are decoded in overlapping spatial tiles blended together (diffusers'
  tiled decode). Progress is reported once per decoded chunk (per tile and frame).
- `auto_tile(latents)` is the tile size a decode of those latents needs to fit the memory that is
  free (engine.memory.planner.plan_vae_tile: 0 = whole frames, which is fastest; tiled 256 px
  measured 1.4x slower on the CPU), estimated from the latent size and the decoder's width.
- Pixel frames are float32 (B, T, H, W, 3) in [0, 1] on the CPU; T = 4n + 1.
- NaN or inf never passes silently: in the input it is a NodeError naming that input, in what
  the encoder or decoder computed (checked per decoded chunk, before the clamp) one naming the
  model file and the fix.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from engine.devices import on_device, pick_device
from engine.dtypes import DTypePolicy, apply_dtype_policy, dtype_policy
from engine.errors import NodeError
from engine.models.detect import Detection, detect_wan_vae
from engine.models.interfaces import LatentGrid, ModelInfo, model_label, non_finite, non_finite_fix
from engine.models.safe_load import ModelLoadError, file_sha256
from engine.models.wan_dit import build_strict, config_overrides, detect_then_load

Progress = Callable[[float, str], Any]

# Inside a residual block: Wan's nn.Sequential indices -> diffusers attribute names.
RESIDUAL_NAMES = {"residual.0": "norm1", "residual.2": "conv1", "residual.3": "norm2",
                  "residual.6": "conv2", "shortcut": "conv_shortcut"}


def module_table(config: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    """Original module path -> (diffusers module path, is a residual block) for a VAE config."""
    levels, n = len(config["dim_mult"]), int(config["num_res_blocks"])
    residual = bool(config["is_residual"])
    table: dict[str, tuple[str, bool]] = {"conv1": ("quant_conv", False),
                                          "conv2": ("post_quant_conv", False)}
    for side in ("encoder", "decoder"):
        table[f"{side}.conv1"] = (f"{side}.conv_in", False)
        table[f"{side}.middle.0"] = (f"{side}.mid_block.resnets.0", True)
        table[f"{side}.middle.1"] = (f"{side}.mid_block.attentions.0", False)
        table[f"{side}.middle.2"] = (f"{side}.mid_block.resnets.1", True)
        table[f"{side}.head.0"] = (f"{side}.norm_out", False)
        table[f"{side}.head.2"] = (f"{side}.conv_out", False)
    flat = 0  # Wan 2.1 numbers the encoder's blocks in one list, level after level
    for i in range(levels):
        for k in range(n):
            if residual:
                table[f"encoder.downsamples.{i}.downsamples.{k}"] = (f"encoder.down_blocks.{i}.resnets.{k}", True)
            else:
                table[f"encoder.downsamples.{flat}"] = (f"encoder.down_blocks.{flat}", True)
                flat += 1
        if i < levels - 1:  # every level but the last ends with a downsample
            if residual:
                table[f"encoder.downsamples.{i}.downsamples.{n}"] = (f"encoder.down_blocks.{i}.downsampler", False)
            else:
                table[f"encoder.downsamples.{flat}"] = (f"encoder.down_blocks.{flat}", False)
                flat += 1
    flat = 0  # the decoder has n + 1 residual blocks per level, then an upsample
    for i in range(levels):
        for k in range(n + 1):
            src = f"decoder.upsamples.{i}.upsamples.{k}" if residual else f"decoder.upsamples.{flat}"
            table[src] = (f"decoder.up_blocks.{i}.resnets.{k}", True)
            flat += 1
        if i < levels - 1:
            if residual:
                table[f"decoder.upsamples.{i}.upsamples.{n + 1}"] = (f"decoder.up_blocks.{i}.upsampler", False)
            else:
                table[f"decoder.upsamples.{flat}"] = (f"decoder.up_blocks.{i}.upsamplers.0", False)
                flat += 1
    return table


def _rename_all(state: Mapping[str, torch.Tensor], modules: Mapping[str, tuple[str, bool]],
                inner: Mapping[str, str], source: Any) -> dict[str, torch.Tensor]:
    out, unknown = {}, []
    for key, value in state.items():
        parts = key.split(".")
        for cut in range(len(parts) - 1, 0, -1):  # longest module path first
            module = ".".join(parts[:cut])
            if module in modules:
                new_module, is_res = modules[module]
                rest = ".".join(parts[cut:])
                if is_res:
                    head, _, param = rest.rpartition(".")
                    rest = f"{inner.get(head, head)}.{param}"
                out[f"{new_module}.{rest}"] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ModelLoadError(source, f"{len(unknown)} tensors of this Wan VAE have no known "
                                     f"counterpart, e.g. {', '.join(sorted(unknown)[:4])}")
    return out


def original_to_diffusers(state: Mapping[str, torch.Tensor], config: Mapping[str, Any],
                          source: Any = "<state dict>") -> dict[str, torch.Tensor]:
    """Rename a Wan-original VAE state dict (no prefix) to diffusers keys."""
    return _rename_all(state, module_table(config), RESIDUAL_NAMES, source)


def diffusers_to_original(state: Mapping[str, torch.Tensor], config: Mapping[str, Any],
                          source: Any = "<state dict>") -> dict[str, torch.Tensor]:
    """Rename a diffusers VAE state dict to Wan's original keys (inverse of original_to_diffusers)."""
    inverse = {new: (old, res) for old, (new, res) in module_table(config).items()}
    return _rename_all(state, inverse, {v: k for k, v in RESIDUAL_NAMES.items()}, source)


def to_diffusers(state: Mapping[str, torch.Tensor], detection: Detection,
                 source: Any = "<state dict>") -> dict[str, torch.Tensor]:
    """Any supported layout -> diffusers keys (prefix stripped, original names converted)."""
    n = len(detection.prefix)
    stripped = {k[n:]: v for k, v in state.items()} if n else dict(state)
    if detection.layout == "diffusers":
        return stripped
    return original_to_diffusers(stripped, detection.config, source)


# ---- the wrapper ------------------------------------------------------------------------------

class WanVAE:
    """A loaded Wan VAE satisfying `engine.models.interfaces.VideoAutoencoder`."""

    def __init__(self, module: torch.nn.Module, info: ModelInfo, grid: LatentGrid,
                 device: torch.device, policy: DTypePolicy, offload: bool = True):
        cfg = module.config
        self.module = module
        self.info = info
        self.grid = grid
        self.device = device
        self.policy = policy
        self.offload = offload
        # (1, C, 1, 1, 1): per-channel statistics of the raw latents
        self.latents_mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.latents_std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.vae_patch = int(cfg.patch_size or 1)  # 2.2 folds 2x2 pixels into channels first

    def __repr__(self) -> str:
        return f"WanVAE({self.info.family}, {self.info.path!r}, {self.policy.name} on {self.device})"

    @contextlib.contextmanager
    def loaded(self) -> Iterator["WanVAE"]:
        with on_device(self.module, self.device, self.offload):
            yield self

    # -- encode --

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, progress: Progress | None = None,
               tile: int | None = None, tile_overlap: int = 64) -> torch.Tensor:
        """frames (B, T, H, W, 3) in [0, 1] -> normalised latents (B, C, T', H', W') (the
        posterior mode). `tile`: spatial tile size in pixels (None: whole frames)."""
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise NodeError(f"the VAE encodes frames (B, T, H, W, 3), got shape {tuple(frames.shape)}")
        _, t, h, w, _ = frames.shape
        self._check_frames(t, h, w)
        if (bad := non_finite(frames)) is not None:
            raise NodeError(f"the video to encode contains {bad}", input="video")
        x = frames.permute(0, 4, 1, 2, 3) * 2.0 - 1.0  # (B, 3, T, H, W) in [-1, 1]
        vae = self.module
        chunks = self.grid.latent_frames(t) * self._tile_count(h // self.grid.spatial, w // self.grid.spatial, tile, tile_overlap)
        with on_device(vae, self.device, self.offload), self._tiling(tile, tile_overlap), \
                _count_calls(vae.encoder, chunks, "encoding", progress):
            moments = vae.encode(x.to(self.device, self.policy.compute)).latent_dist.mode()
        z = moments.float().cpu()  # (B, C, T', H', W')
        if (bad := non_finite(z)) is not None:
            raise NodeError(f"{model_label(self, 'VAE encoder')} produced {bad}: "
                            f"{non_finite_fix(self)}", input="vae")
        return (z - self.latents_mean) / self.latents_std

    # -- decode --

    def auto_tile(self, latents: torch.Tensor, overlap: int = 64) -> int:
        """The spatial tile (pixels) that decoding `latents` (B, C, T', H', W') needs to fit what
        is free on this VAE's device (0: whole frames fit)."""
        from engine.memory.budget import detect_budgets
        from engine.memory.planner import plan_vae_tile
        from engine.memory.sizes import module_bytes

        _, _, t, h, w = latents.shape
        s = self.grid.spatial
        budgets = detect_budgets(self.device)
        if budgets.device == "cuda":  # idle models are evicted before the decode (manager)
            free = budgets.usable_vram - module_bytes(self.module)
        else:
            free = int(budgets.ram * 0.8)
        scale = float(getattr(self.module.config, "base_dim", 96) or 96) / 96.0
        compute = torch.tensor([], dtype=self.policy.compute).element_size()
        tile = plan_vae_tile(h * s, w * s, free, batch=latents.shape[0], compute_bytes=compute,
                             frames=self.grid.pixel_frames(t), spatial=s, scale=scale)
        return tile if tile > overlap else 0

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, progress: Progress | None = None,
               tile: int | None = None, tile_overlap: int = 64) -> torch.Tensor:
        """normalised latents (B, C, T', H', W') -> frames (B, T, H, W, 3) in [0, 1], T = 4T'-3."""
        if latents.ndim != 5 or latents.shape[1] != self.grid.channels:
            raise NodeError(f"this VAE decodes latents (B, {self.grid.channels}, T, H, W), got shape "
                            f"{tuple(latents.shape)}; the latent comes from a different model family")
        if (bad := non_finite(latents)) is not None:
            raise NodeError(f"the latent to decode contains {bad}: the sampler or node that made it "
                            "computed it, not this VAE", input="latent")
        z = latents.float() * self.latents_std + self.latents_mean  # raw latents
        _, _, t, h, w = z.shape
        vae = self.module
        tiles = self._tile_count(h, w, tile, tile_overlap)
        with on_device(vae, self.device, self.offload), self._tiling(tile, tile_overlap):
            z = z.to(self.device, self.policy.compute)
            if tiles > 1:
                with _count_calls(vae.decoder, t * tiles, "decoding", progress):
                    out = vae.tiled_decode(z, return_dict=False)[0].float().cpu()
                self._check_decoded(out, "")
            else:
                out = self._decode_frames(z, progress)
        return ((out + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 4, 1).contiguous()

    def _decode_frames(self, z: torch.Tensor, progress: Progress | None) -> torch.Tensor:
        """The causal frame-by-frame decode of diffusers' AutoencoderKLWan._decode, with each
        output chunk moved to the CPU as soon as it exists."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        vae = self.module
        frames = z.shape[2]
        vae.clear_cache()
        try:
            x = vae.post_quant_conv(z)
            chunks = []
            for i in range(frames):
                vae._conv_idx = [0]
                out = vae.decoder(x[:, :, i:i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                                  first_chunk=(i == 0))  # (B, 3*p*p, 1 or 4, H/p, W/p)
                if self.vae_patch > 1:
                    out = unpatchify(out, patch_size=self.vae_patch)
                # checked before the clamp, which would hide inf
                self._check_decoded(out, f" in latent frame {i + 1} of {frames}")
                chunks.append(out.clamp(-1.0, 1.0).float().cpu())
                if progress is not None:
                    progress((i + 1) / frames, f"decoding latent frame {i + 1}/{frames}")
        finally:
            vae.clear_cache()  # drop the feature cache even when interrupted
        return torch.cat(chunks, dim=2)  # (B, 3, T, H, W)

    # -- helpers --

    def _check_decoded(self, out: torch.Tensor, where: str) -> None:
        if (bad := non_finite(out)) is not None:
            raise NodeError(f"{model_label(self, 'VAE decoder')} produced {bad}{where}: "
                            f"{non_finite_fix(self)}", input="vae")

    def _check_frames(self, t: int, h: int, w: int) -> None:
        g = self.grid
        if (t - 1) % g.temporal:
            lo = (t - 1) // g.temporal * g.temporal + 1
            raise NodeError(f"the VAE needs {g.temporal}n+1 frames, got {t}; trim to {lo} or extend "
                            f"to {lo + g.temporal}")
        if h % g.spatial or w % g.spatial:
            raise NodeError(f"frame size {w}x{h} is not a multiple of {g.spatial} (the VAE's "
                            "spatial compression); resize or crop the video")

    def _tile_count(self, h: int, w: int, tile: int | None, overlap: int) -> int:
        """Tiles diffusers' tiled encode/decode will use for a latent of h x w (1 = untiled)."""
        if not tile:
            return 1
        s = self.grid.spatial
        if tile % s or overlap % s or not 0 <= overlap < tile:
            raise NodeError(f"tile size {tile} and overlap {overlap} must be multiples of {s} with "
                            "overlap smaller than the tile")
        if h <= tile // s and w <= tile // s:
            return 1
        stride = (tile - overlap) // s
        return len(range(0, h, stride)) * len(range(0, w, stride))

    @contextlib.contextmanager
    def _tiling(self, tile: int | None, overlap: int) -> Iterator[None]:
        vae = self.module
        saved = (vae.use_tiling, vae.tile_sample_min_height, vae.tile_sample_min_width,
                 vae.tile_sample_stride_height, vae.tile_sample_stride_width)
        if tile:
            vae.use_tiling = True
            vae.tile_sample_min_height = vae.tile_sample_min_width = int(tile)
            vae.tile_sample_stride_height = vae.tile_sample_stride_width = int(tile - overlap)
        else:
            vae.use_tiling = False
        try:
            yield
        finally:
            (vae.use_tiling, vae.tile_sample_min_height, vae.tile_sample_min_width,
             vae.tile_sample_stride_height, vae.tile_sample_stride_width) = saved


@contextlib.contextmanager
def _count_calls(module: torch.nn.Module, total: int, verb: str,
                 progress: Progress | None) -> Iterator[None]:
    """Report progress after each forward call of `module` (one per chunk or tile)."""
    if progress is None:
        yield
        return
    count = [0]

    def hook(*_: Any) -> None:
        count[0] += 1
        progress(min(1.0, count[0] / max(total, 1)), f"{verb} chunk {count[0]}/{total}")

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# ---- loading ----------------------------------------------------------------------------------

def load_vae(path: Path | str, device: torch.device | str | None = None,
             dtype: str | DTypePolicy | None = None, config: Mapping[str, Any] | None = None,
             dit_patch: int = 2, offload: bool = True, compute_hash: bool = True) -> WanVAE:
    """Load a Wan VAE (2.1 or 2.2) from a .safetensors/.pth file or a diffusers folder.

    dit_patch: the spatial patch of the DiT it pairs with (recorded in `grid.patch`).
    config: overrides, e.g. {"latents_mean": [...], "latents_std": [...]} for a custom VAE.
    """
    from diffusers import AutoencoderKLWan

    path = Path(path)
    overrides = config_overrides(path, config)
    detection, state = detect_then_load(path, lambda shapes: detect_wan_vae(shapes, path, overrides))
    state = to_diffusers(state, detection, path)
    module = build_strict(AutoencoderKLWan, detection.config, state, path)
    device = pick_device(device)
    policy = dtype if isinstance(dtype, DTypePolicy) else dtype_policy(dtype or "auto", device, "vae")
    apply_dtype_policy(module, policy, AutoencoderKLWan._keep_in_fp32_modules or ())
    cfg = detection.config
    grid = LatentGrid(channels=int(cfg["z_dim"]), temporal=int(cfg["scale_factor_temporal"]),
                      spatial=int(cfg["scale_factor_spatial"]), patch=int(dit_patch))
    info = ModelInfo(path=str(path), family=detection.family, layout=detection.layout,
                     sha256=file_sha256(path) if compute_hash else "", config=dict(cfg))
    return WanVAE(module, info, grid, device, policy, offload)
