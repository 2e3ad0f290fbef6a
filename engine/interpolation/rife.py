"""RIFE 4.x (IFNet) frame interpolation: the network, its checkpoint loader and an interpolator.

IFNet (Huang et al., "Real-Time Intermediate Flow Estimation", ECCV 2022; Practical-RIFE 4.x) is a
coarse-to-fine stack of IFBlocks. Block i sees the two frames (warped by the flow so far) at
1/scales[i] resolution plus the timestep t, and predicts a residual of the 4-channel flow (t -> 0,
t -> 1) and of a blend mask. The result is warp(I0, F_t0) * m + warp(I1, F_t1) * (1 - m), with
m = sigmoid(mask) and warping by bilinear grid_sample (border padding).

Layouts read from the checkpoint (`IFNetConfig.from_state_dict`), keys as in Practical-RIFE's
`flownet.pkl` after stripping DataParallel's `module.` prefix:
- `block{i}.conv0` (two stride-2 conv + LeakyReLU), `block{i}.convblock` (ResConvs with a
  per-channel `beta`), `block{i}.lastconv` (ConvTranspose2d + PixelShuffle(2)); the block widths
  come from the weights.
- v4.0-v4.6: no feature encoder, mask residuals accumulate.
- v4.13+: `encode.cnn0..cnn3` per-frame feature head, warped alongside the frames; the mask is
  replaced by each block. v4.22+: blocks also pass 8 feature channels on to the next block.
- 4 blocks use scales [8, 4, 2, 1]; n blocks use [2^(n-1), ..., 1].
The v4.7-v4.12 `encode.0/encode.1` sequential encoders are not supported (a clear error says so).

Invariants: weights load only through engine.models.safe_load (safetensors or weights-only
torch.load); every weight the network needs must be in the file (a mismatch is a ModelLoadError
naming the file); inputs are padded to a multiple of 4 * max(scales) and cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.models.interfaces import ModelInfo
from engine.models.safe_load import ModelLoadError, file_sha256, load_state_dict

# Modules of the training script that some checkpoints carry but inference never runs.
_TRAINING_ONLY = ("teacher.", "caltime.")


@dataclass(frozen=True)
class IFNetConfig:
    widths: tuple[int, ...] = (192, 128, 96, 64)  # channels of each IFBlock
    feature_channels: int = 0  # per-frame channels from the encoder head; 0 = no encoder (v4.0-4.6)
    head_width: int = 16  # hidden width of the encoder head
    block_extra: int = 0  # channels a block hands to the next (v4.22+: 8)
    depth: int = 8  # ResConvs per block
    scales: tuple[float, ...] = (8.0, 4.0, 2.0, 1.0)

    @property
    def accumulate_mask(self) -> bool:
        # v4.6 and earlier add each block's mask to the last; versions with a feature head replace it
        return self.feature_channels == 0

    @property
    def pad_multiple(self) -> int:
        # a block runs at 1/scale and conv0 strides by 4 more, so sizes must divide 4 * scale
        return int(4 * max(self.scales))

    def in_channels(self, index: int) -> int:
        features = 2 * self.feature_channels
        if index == 0:
            return 3 + 3 + features + 1  # img0, img1, features, t
        # warped img0, img1, features, t, mask, extra, + the flow so far (4, added in the block)
        return 3 + 3 + features + 1 + 1 + self.block_extra + 4

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "IFNetConfig":
        """The layout of a state dict (keys without `module.`); KeyError/ValueError if not IFNet."""
        n = 0
        while f"block{n}.conv0.0.0.weight" in sd:
            n += 1
        if n == 0:
            raise KeyError("block0.conv0.0.0.weight")
        if any(k.startswith("encode.") for k in sd) and "encode.cnn0.weight" not in sd:
            raise ValueError("its feature encoder is the v4.7-v4.12 sequential kind, which this "
                             "loader does not support; use RIFE v4.6 or v4.13 and later")
        widths = tuple(int(sd[f"block{i}.conv0.1.0.weight"].shape[0]) for i in range(n))
        depth = len({k.split(".")[2] for k in sd if k.startswith("block0.convblock.")})
        feature_channels = head_width = 0
        if "encode.cnn0.weight" in sd:
            head_width = int(sd["encode.cnn0.weight"].shape[0])
            feature_channels = int(sd["encode.cnn3.weight"].shape[1])  # ConvTranspose: (in, out, k, k)
        out_channels = int(sd["block0.lastconv.0.weight"].shape[1]) // 4  # before PixelShuffle(2)
        block_extra = out_channels - 5 if out_channels > 6 else 0  # 6 = 4 flow + 1 mask + 1 unused
        scales = tuple(float(2 ** (n - 1 - i)) for i in range(n))
        return cls(widths, feature_channels, head_width or 16, block_extra, depth, scales)

    @property
    def label(self) -> str:
        kind = "v4.0-4.6" if not self.feature_channels else ("v4.22+" if self.block_extra else "v4.13+")
        return f"RIFE IFNet {kind} ({len(self.widths)} blocks, widths {list(self.widths)})"


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2, inplace=True))


class ResConv(nn.Module):
    """3x3 conv scaled by a learned per-channel beta, plus the input, then LeakyReLU."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, c, 1, 1))
        self.relu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x) * self.beta + x)


class IFBlock(nn.Module):
    """One pyramid level: (inputs, flow so far) at 1/scale -> (flow residual, mask, extra)."""

    def __init__(self, in_channels: int, width: int, depth: int, out_channels: int):
        super().__init__()
        self.conv0 = nn.Sequential(_conv(in_channels, width // 2, 2), _conv(width // 2, width, 2))
        self.convblock = nn.Sequential(*[ResConv(width) for _ in range(depth)])
        # 4x up in total: ConvTranspose doubles, PixelShuffle(2) doubles again (and divides C by 4)
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(width, out_channels * 4, 4, 2, 1),
                                      nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None, scale: float):
        # x: (N, C, H, W); flow: (N, 4, H, W) in full-resolution pixels or None
        if scale != 1:
            x = F.interpolate(x, scale_factor=1 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            if scale != 1:  # resample, and flow vectors shrink with the picture
                flow = F.interpolate(flow, scale_factor=1 / scale, mode="bilinear",
                                     align_corners=False) / scale
            x = torch.cat([x, flow], 1)
        out = self.lastconv(self.convblock(self.conv0(x)))  # (N, out_channels, H/scale, W/scale)
        if scale != 1:
            out = F.interpolate(out, scale_factor=scale, mode="bilinear", align_corners=False)
        extra = out[:, 5:] if out.shape[1] > 6 else None
        return out[:, :4] * scale, out[:, 4:5], extra


class FeatureHead(nn.Module):
    """Per-frame features for v4.13+: (N, 3, H, W) -> (N, feature_channels, H, W)."""

    def __init__(self, width: int, out: int):
        super().__init__()
        self.cnn0 = nn.Conv2d(3, width, 3, 2, 1)
        self.cnn1 = nn.Conv2d(width, width, 3, 1, 1)
        self.cnn2 = nn.Conv2d(width, width, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(width, out, 4, 2, 1)
        self.relu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.cnn0(x))
        x = self.relu(self.cnn1(x))
        x = self.relu(self.cnn2(x))
        return self.cnn3(x)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: out(x) = image(x + flow(x)). image (N, C, H, W), flow (N, 2, H, W) pixels."""
    n, _, h, w = flow.shape
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
    # pixels -> normalised units of align_corners=True grids: 2 / (size - 1) per pixel
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=flow.device, dtype=flow.dtype)
    grid = base[None] + flow.permute(0, 2, 3, 1) * scale  # (N, H, W, 2)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class IFNet(nn.Module):
    def __init__(self, config: IFNetConfig = IFNetConfig()):
        super().__init__()
        self.config = config
        out_channels = 5 + config.block_extra if config.block_extra else 6
        for i, width in enumerate(config.widths):
            # named block0..blockN (not a ModuleList) so checkpoint keys match as they are
            self.add_module(f"block{i}", IFBlock(config.in_channels(i), width, config.depth, out_channels))
        self.encode = (FeatureHead(config.head_width, config.feature_channels)
                       if config.feature_channels else None)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """img0, img1: (N, 3, H, W) in [0, 1], H and W multiples of `config.pad_multiple`;
        timestep: (N, 1, H, W) or (N, 1, 1, 1). Returns the frame at t, (N, 3, H, W)."""
        n, _, h, w = img0.shape
        t = timestep.expand(n, 1, h, w)
        feats0 = feats1 = None
        if self.encode is not None:
            feats0, feats1 = self.encode(img0), self.encode(img1)  # (N, F, H, W)
        flow = mask = extra = None
        warped0, warped1 = img0, img1
        for i, scale in enumerate(self.config.scales):
            block = getattr(self, f"block{i}")
            if flow is None:
                parts = [img0, img1] + ([feats0, feats1] if feats0 is not None else []) + [t]
                flow, mask, extra = block(torch.cat(parts, 1), None, scale)
            else:
                parts = [warped0, warped1]
                if feats0 is not None:
                    parts += [warp(feats0, flow[:, :2]), warp(feats1, flow[:, 2:4])]
                parts += [t, mask] + ([extra] if extra is not None else [])
                delta, mask_delta, extra = block(torch.cat(parts, 1), flow, scale)
                flow = flow + delta  # (N, 4, H, W): flow t->0 then t->1
                mask = mask + mask_delta if self.config.accumulate_mask else mask_delta
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        m = torch.sigmoid(mask)
        return warped0 * m + warped1 * (1 - m)


# ---- loading ---------------------------------------------------------------------------------

def strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without DataParallel's `module.` prefix, minus training-only modules."""
    out = {}
    for key, value in sd.items():
        key = key.removeprefix("module.")
        if not key.startswith(_TRAINING_ONLY):
            out[key] = value
    return out


def build_ifnet(sd: dict[str, torch.Tensor], path: Path | str = "<state dict>") -> IFNet:
    """An IFNet with the layout and weights of `sd`; ModelLoadError naming `path` on mismatch."""
    sd = strip_prefix(sd)
    try:
        config = IFNetConfig.from_state_dict(sd)
    except KeyError as exc:
        if "block0.conv0.0.0.weight" in sd:
            raise ModelLoadError(path, f"it looks like a RIFE IFNet checkpoint but lacks {exc}; "
                                       "the file is incomplete or from another variant") from None
        sample = ", ".join(sorted(sd)[:3]) or "none"
        raise ModelLoadError(path, "this is not a RIFE 4.x IFNet checkpoint (no 'block0.conv0.0.0."
                                   f"weight'; its first keys are {sample}). Put Practical-RIFE's "
                                   "flownet.pkl (v4.x) or a safetensors copy of it in the "
                                   "interpolation folder") from None
    except ValueError as exc:
        raise ModelLoadError(path, str(exc)) from None
    model = IFNet(config)
    expected = set(model.state_dict())
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - expected)
    if missing or unexpected:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise ModelLoadError(path, f"its keys do not match {config.label}: {'; '.join(details)}")
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[-1].strip()
        raise ModelLoadError(path, f"its tensor shapes do not match {config.label}: {first}") from None
    return model.eval()


class RifeInterpolator:
    """A loaded RIFE model with the same `between` interface as the classical interpolator."""

    name = "rife"

    def __init__(self, model: IFNet, info: ModelInfo, device: Any = "cpu"):
        self.info = info
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def between(self, frame0: np.ndarray, frame1: np.ndarray, times: Sequence[float]) -> list[np.ndarray]:
        """Frames at each t in `times` between two (H, W, 3) float [0, 1] frames, in one batch."""
        h, w = frame0.shape[:2]
        m = self.model.config.pad_multiple
        pad = (0, (-w) % m, 0, (-h) % m)  # zero padding on the right/bottom, as RIFE was run
        a = F.pad(torch.from_numpy(np.ascontiguousarray(frame0)).permute(2, 0, 1)[None], pad)
        b = F.pad(torch.from_numpy(np.ascontiguousarray(frame1)).permute(2, 0, 1)[None], pad)
        n = len(times)
        a, b = a.to(self.device).expand(n, -1, -1, -1), b.to(self.device).expand(n, -1, -1, -1)
        t = torch.tensor(list(times), dtype=a.dtype, device=self.device).view(n, 1, 1, 1)
        out = self.model(a, b, t)[:, :, :h, :w].clamp(0, 1)  # (N, 3, H, W)
        return [frame.permute(1, 2, 0).float().cpu().numpy() for frame in out]


def load_rife(path: Path | str, device: Any = "cpu") -> RifeInterpolator:
    """Load a RIFE 4.x checkpoint (.safetensors, or .pkl/.pth via weights-only torch.load)."""
    path = Path(path)
    model = build_ifnet(load_state_dict(path), path)
    info = ModelInfo(path=str(path), family="rife-4", layout="practical-rife",
                     sha256=file_sha256(path), config={"label": model.config.label})
    return RifeInterpolator(model, info, device)
