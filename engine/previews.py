"""Latent previews: a cheap latent-to-RGB projection of the whole clip, per model family.

While DiTDenoise runs, each step's clean estimate x0 (C, T', H', W') becomes a small RGB clip
(T', H', W', 3) the studio animates. The projection is one linear map per latent pixel,
rgb = x0 · F + b (F: C x 3), then [-1, 1] -> [0, 1] — ComfyUI's "Latent2RGB" previewer, so the
colours match what its users know. The factors are the published constants of ComfyUI's
comfy/latent_formats.py (classes Wan21, Wan22): a least-squares fit of decoded RGB on the
*normalised* latent (the space the DiT works in, (z - mean) / std), which is the space our sampler's
x0 lives in too.

Families are recognised by channel count (16: Wan 2.1 VAE, also used by Wan 2.2 A14B; 48: the Wan 2.2
TI2V-5B VAE). Any other width (the tiny demo model) falls back to a hue-wheel
projection (`hue_wheel_rgb`), which shows layout and motion but not true colour.

Invariants: no Qt; never raises on odd shapes (a preview must not fail a run); the result is a
small uint8 tensor, so it crosses the worker pipe cheaply (21 x 60 x 104 x 3 = 0.4 MB at 832x480).
"""

from __future__ import annotations

from typing import Any

# ComfyUI comfy/latent_formats.py, class Wan21 (16 channels): rows are channels, columns R, G, B
WAN21_RGB_FACTORS = (
    (-0.1299, -0.1692, 0.2932), (0.0671, 0.0406, 0.0442), (0.3568, 0.2548, 0.1747),
    (0.0372, 0.2344, 0.1420), (0.0313, 0.0189, -0.0328), (0.0296, -0.0956, -0.0665),
    (-0.3477, -0.4059, -0.2925), (0.0166, 0.1902, 0.1975), (-0.0412, 0.0267, -0.1364),
    (-0.1293, 0.0740, 0.1636), (0.0680, 0.3019, 0.1128), (0.0032, 0.0581, 0.0639),
    (-0.1251, 0.0927, 0.1699), (0.0060, -0.0633, 0.0005), (0.3477, 0.2275, 0.2950),
    (0.1984, 0.0913, 0.1861),
)
WAN21_RGB_BIAS = (-0.1835, -0.0868, -0.3360)

# ComfyUI comfy/latent_formats.py, class Wan22 (48 channels)
WAN22_RGB_FACTORS = (
    (0.0119, 0.0103, 0.0046), (-0.1062, -0.0504, 0.0165), (0.0140, 0.0409, 0.0491),
    (-0.0813, -0.0677, 0.0607), (0.0656, 0.0851, 0.0808), (0.0264, 0.0463, 0.0912),
    (0.0295, 0.0326, 0.0590), (-0.0244, -0.0270, 0.0025), (0.0443, -0.0102, 0.0288),
    (-0.0465, -0.0090, -0.0205), (0.0359, 0.0236, 0.0082), (-0.0776, 0.0854, 0.1048),
    (0.0564, 0.0264, 0.0561), (0.0006, 0.0594, 0.0418), (-0.0319, -0.0542, -0.0637),
    (-0.0268, 0.0024, 0.0260), (0.0539, 0.0265, 0.0358), (-0.0359, -0.0312, -0.0287),
    (-0.0285, -0.1032, -0.1237), (0.1041, 0.0537, 0.0622), (-0.0086, -0.0374, -0.0051),
    (0.0390, 0.0670, 0.2863), (0.0069, 0.0144, 0.0082), (0.0006, -0.0167, 0.0079),
    (0.0313, -0.0574, -0.0232), (-0.1454, -0.0902, -0.0481), (0.0714, 0.0827, 0.0447),
    (-0.0304, -0.0574, -0.0196), (0.0401, 0.0384, 0.0204), (-0.0758, -0.0297, -0.0014),
    (0.0568, 0.1307, 0.1372), (-0.0055, -0.0310, -0.0380), (0.0239, -0.0305, 0.0325),
    (-0.0663, -0.0673, -0.0140), (-0.0416, -0.0047, -0.0023), (0.0166, 0.0112, -0.0093),
    (-0.0211, 0.0011, 0.0331), (0.1833, 0.1466, 0.2250), (-0.0368, 0.0370, 0.0295),
    (-0.3441, -0.3543, -0.2008), (-0.0479, -0.0489, -0.0420), (-0.0660, -0.0153, 0.0800),
    (-0.0101, 0.0068, 0.0156), (-0.0690, -0.0452, -0.0927), (-0.0145, 0.0041, 0.0015),
    (0.0421, 0.0451, 0.0373), (0.0504, -0.0483, -0.0356), (-0.0837, 0.0168, 0.0055),
)
WAN22_RGB_BIAS = (0.0317, -0.0878, -0.1388)

FAMILIES: dict[int, tuple[str, tuple, tuple]] = {
    16: ("wan2.1", WAN21_RGB_FACTORS, WAN21_RGB_BIAS),
    48: ("wan2.2", WAN22_RGB_FACTORS, WAN22_RGB_BIAS),
}

MAX_FRAMES = 48  # more latent frames than this are subsampled evenly (the preview is a glance)


def family_of(channels: int) -> str:
    """'wan2.1', 'wan2.2', or 'generic' (hue-wheel fallback) for a latent of `channels`."""
    return FAMILIES[channels][0] if channels in FAMILIES else "generic"


def latent_to_rgb(latent: Any) -> Any:
    """(C, T', H', W') or (C, H', W') latent -> float (T', H', W', 3) / (H', W', 3) in [0, 1]."""
    import torch

    x = latent.detach().float().cpu()
    c = x.shape[0]
    if c in FAMILIES:
        _, factors, bias = FAMILIES[c]
        f = torch.tensor(factors, dtype=torch.float32)  # (C, 3)
        rgb = torch.einsum("c...,ck->...k", x, f) + torch.tensor(bias)  # (..., H', W', 3)
        return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)
    return hue_wheel_rgb(x)


def hue_wheel_rgb(latent: Any) -> Any:
    """A fixed RGB picture of latents of any width: (C, ..., H', W') -> (..., H', W', 3) in [0, 1].

    Channel c gets the hue angle 2*pi*c/C on the colour wheel; its contribution to R, G and B is the
    cosine of that angle against three directions 120 degrees apart, scaled by 1/sqrt(C); a tanh
    squashes the sum into [0, 1]. It shows layout and motion, not true colour.
    """
    import math

    import torch

    c = latent.shape[0]
    hues = torch.arange(c, dtype=torch.float32) * (2 * math.pi / c)  # (C,)
    axes = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])  # (3,) R, G, B directions
    factors = torch.cos(hues[:, None] - axes[None, :]) / math.sqrt(c)  # (C, 3)
    rgb = torch.einsum("c...,ck->...k", latent.float(), factors)  # (..., H', W', 3)
    return 0.5 + 0.5 * torch.tanh(rgb)


def clip_preview(latent: Any) -> Any:
    """The whole clip as a uint8 tensor (T', H', W', 3), ready for NodeProgress.preview.

    `latent` is one sample's x0, (C, T', H', W'). Frames beyond MAX_FRAMES are subsampled."""
    import torch

    if latent.dim() == 3:
        latent = latent.unsqueeze(1)  # (C, 1, H', W'): a single image
    t = latent.shape[1]
    if t > MAX_FRAMES:
        latent = latent[:, torch.linspace(0, t - 1, MAX_FRAMES).round().long()]
    rgb = latent_to_rgb(latent)  # (T', H', W', 3)
    return (rgb * 255.0 + 0.5).to(torch.uint8)
