"""Full-size Wan checkpoints (random weights, real layouts): load time, load peak, resident size,
s/step (fp32 vs bf16, cfg batched vs sequential) and VAE decode time and peak, on this machine.

    .venv/bin/python bench/real_size.py            # ~10-15 min on 2 CPU cores
    .venv/bin/python bench/real_size.py --quick    # 4 of the 24 UMT5 blocks

Builds, tensor by tensor (so building needs one tensor of memory), in a temporary folder:
- Wan 2.1 T2V 1.3B in ComfyUI's layout (`model.diffusion_model.` keys): fp16 (2.6 GB) and ComfyUI's
  scaled fp8 (1.4 GB: float8 Linear weights + scale_weight, a scaled_fp8 marker);
- the Wan 2.1 VAE in Wan's original layout (bf16, as ComfyUI's wan_2.1_vae.safetensors);
- UMT5-XXL in ComfyUI's scaled-fp8 layout (umt5_xxl_fp8_e4m3fn_scaled: float8 Linears, bf16
  embedding, a tiny tokenizer embedded), all 24 blocks (6.7 GB), or 4 with --quick.
Each measurement runs in its own process so peaks are clean: "peak" is the process's peak RSS
(VmHWM, interpreter and libraries included), "load +" the growth during the load alone, "weights"
the bytes of the loaded parameters and buffers (what stays resident once every layer has run).
Ratios compare with the figures measured on main before the streaming loader (issue 16).
Never run as a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GIB = 2**30
PREFIX = "model.diffusion_model."
WAN_1_3B = dict(num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30)
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, num_heads=64, d_ff=10240, num_buckets=32)
T5_LINEARS = (".q.weight", ".k.weight", ".v.weight", ".o.weight", "wi_0.weight", "wi_1.weight",
              "wo.weight")
# Measured on main before this change (issue 16), CPU, same files: GiB.
BEFORE = {"dit_auto_peak": 8.4, "dit_auto_resident": 5.3, "dit_fp8_peak": 7.1,
          "dit_fp8_resident": 1.4, "t5_peak_low": 22.0, "t5_peak_high": 37.0,
          "vae_untiled_peak": 9.0, "vae_tiled_peak": 2.7, "vae_tiled_slowdown": 1.4}


# ---- building the files ------------------------------------------------------------------------

class _Pool:
    """Random values for big tensors, drawn once and sliced (drawing 8 billion normals would take
    longer than the whole benchmark); std 0.02 like an initialised transformer."""

    def __init__(self, n: int = 1 << 24):
        import torch

        self.values = torch.randn(n, generator=torch.Generator().manual_seed(0)) * 0.02
        self.offset = 0

    def take(self, shape: tuple[int, ...]) -> Any:
        import torch

        n = 1
        for d in shape:
            n *= d
        reps = -(-n // self.values.numel())
        self.offset = (self.offset + 7919) % self.values.numel()
        flat = torch.roll(self.values, self.offset).repeat(reps)[:n] if reps > 1 \
            else torch.roll(self.values, self.offset)[:n]
        return flat.reshape(shape)


def build_dit(path: Path, scaled_fp8: bool, pool: _Pool) -> Path:
    import torch
    from diffusers import WanTransformer3DModel

    from engine.models.safe_load import save_state_dict_streaming
    from engine.models.wan_dit import build_meta, diffusers_to_original

    meta = build_meta(WanTransformer3DModel, WAN_1_3B)
    shapes = diffusers_to_original({k: tuple(v.shape) for k, v in meta.state_dict().items()})
    specs: dict[str, Any] = {}
    linear = set()
    for key, shape in shapes.items():
        is_linear = key.endswith(".weight") and len(shape) == 2
        specs[PREFIX + key] = (shape, torch.float8_e4m3fn if scaled_fp8 and is_linear else torch.float16)
        if scaled_fp8 and is_linear:
            linear.add(PREFIX + key)
            specs[PREFIX + key[: -len("weight")] + "scale_weight"] = ((), torch.float32)
    if scaled_fp8:
        specs[PREFIX + "scaled_fp8"] = ((0,), torch.float8_e4m3fn)
    scale = 0.08 / 448.0

    def make(key: str) -> Any:
        shape, dtype = specs[key]
        if key.endswith("scale_weight"):
            return torch.tensor(scale, dtype=torch.float32)
        if 0 in shape:
            return torch.zeros(shape, dtype=dtype)
        value = pool.take(shape)
        return (value / scale).to(dtype) if key in linear else value.to(dtype)

    config = {"config": json.dumps({"num_attention_heads": WAN_1_3B["num_attention_heads"]})}
    return save_state_dict_streaming(specs, make, path, config)


def build_vae(path: Path) -> Path:
    import torch
    from diffusers import AutoencoderKLWan

    from engine.models.safe_load import save_state_dict
    from engine.models.wan_vae import diffusers_to_original

    torch.manual_seed(0)
    vae = AutoencoderKLWan()  # the Wan 2.1 VAE's config (diffusers' defaults)
    state = {k: v.to(torch.bfloat16) for k, v in
             diffusers_to_original(vae.state_dict(), dict(vae.config)).items()}
    return save_state_dict(state, path)


def build_umt5(path: Path, layers: int, pool: _Pool) -> Path:
    import torch

    from engine.models.safe_load import save_state_dict_streaming
    from tests.tiny_models import tokenizer_bytes

    d, ff, inner = UMT5_XXL["d_model"], UMT5_XXL["d_ff"], UMT5_XXL["num_heads"] * UMT5_XXL["d_kv"]
    specs: dict[str, Any] = {"shared.weight": ((UMT5_XXL["vocab_size"], d), torch.bfloat16)}
    for i in range(layers):
        b = f"encoder.block.{i}.layer."
        for name, shape in [("0.SelfAttention.q", (inner, d)), ("0.SelfAttention.k", (inner, d)),
                            ("0.SelfAttention.v", (inner, d)), ("0.SelfAttention.o", (d, inner)),
                            ("1.DenseReluDense.wi_0", (ff, d)), ("1.DenseReluDense.wi_1", (ff, d)),
                            ("1.DenseReluDense.wo", (d, ff))]:
            specs[f"{b}{name}.weight"] = (shape, torch.float8_e4m3fn)
            specs[f"{b}{name}.scale_weight"] = ((), torch.float32)
        specs[f"{b}0.SelfAttention.relative_attention_bias.weight"] = (
            (UMT5_XXL["num_buckets"], UMT5_XXL["num_heads"]), torch.float32)
        specs[f"{b}0.layer_norm.weight"] = ((d,), torch.float32)
        specs[f"{b}1.layer_norm.weight"] = ((d,), torch.float32)
    specs["encoder.final_layer_norm.weight"] = ((d,), torch.float32)
    specs["scaled_fp8"] = ((0,), torch.float8_e4m3fn)
    spiece = tokenizer_bytes()
    specs["spiece_model"] = ((len(spiece),), torch.uint8)
    scale = 0.08 / 448.0

    def make(key: str) -> Any:
        shape, dtype = specs[key]
        if key == "spiece_model":
            return torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
        if key.endswith("scale_weight"):
            return torch.tensor(scale, dtype=torch.float32)
        if key.endswith("layer_norm.weight"):
            return torch.ones(shape, dtype=dtype)
        if 0 in shape:
            return torch.zeros(shape, dtype=dtype)
        value = pool.take(shape)
        return (value / scale).to(dtype) if dtype == torch.float8_e4m3fn else (value * 50).to(dtype)

    return save_state_dict_streaming(specs, make, path)


# ---- measurements (each in a child process) ------------------------------------------------------

def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))


def _reset_peak() -> None:
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS (Linux)
    except OSError:
        pass


def _weights(module: Any) -> int:
    """Bytes of the parameters and buffers, each tensor once (tied embeddings share one)."""
    seen = {t.data_ptr(): t.numel() * t.element_size()
            for t in [*module.parameters(), *module.buffers()]}
    return sum(seen.values())


def child(task: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_grad_enabled(False)
    kind = task["kind"]
    if kind == "load_dit":
        from engine.models.wan_dit import load_dit

        load_dit(task["warm"], device="cpu", dtype=task["dtype"], compute_hash=False)
        _reset_peak()
        base = _status("VmRSS:")
        t0 = time.perf_counter()
        dit = load_dit(task["path"], device="cpu", dtype=task["dtype"], compute_hash=False)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "base": base, "peak": _status("VmHWM:"),
                "after": _status("VmRSS:"), "weights": _weights(dit.module), "policy": dit.policy.name}
    if kind == "load_t5":
        from engine.models.text_encoders import load_text_encoder

        _reset_peak()
        base = _status("VmRSS:")
        t0 = time.perf_counter()
        enc = load_text_encoder(task["path"], device="cpu", dtype=task["dtype"], hash_weights=False)
        seconds = time.perf_counter() - t0
        out = {"seconds": seconds, "base": base, "peak": _status("VmHWM:"),
               "after": _status("VmRSS:"), "weights": _weights(enc.model),
               "embedding": enc.model.shared.weight.numel() * enc.model.shared.weight.element_size(),
               "policy": str(next(p for n, p in enc.model.named_parameters()
                                  if "wi_0" in n).dtype).replace("torch.", "")}
        t0 = time.perf_counter()
        enc.encode(["a red fox running through snow, cinematic lighting"])  # touches every weight
        out.update(encode_seconds=time.perf_counter() - t0, encode_peak=_status("VmHWM:"))
        return out
    if kind == "step":
        import inspect

        from engine.models.wan_dit import load_dit
        from engine.sampling import sample
        from engine.values import Conditioning, Latent

        dit = load_dit(task["path"], device="cpu", dtype=task["dtype"], compute_hash=False)
        frames = task["frames"]
        g = torch.Generator().manual_seed(0)
        lat = Latent(samples=torch.randn(1, 16, (frames - 1) // 4 + 1, 60, 104, generator=g))
        mask = torch.zeros(1, 512)
        mask[:, :24] = 1
        emb = torch.randn(1, 512, 4096, generator=g) * 0.1 * mask.unsqueeze(-1)
        cond = Conditioning(embeds=emb, mask=mask, negative_embeds=emb.flip(1) * 0.5,
                            negative_mask=mask.clone())
        has_batch = "batch_cfg" in inspect.signature(sample).parameters
        small = Latent(samples=torch.randn(1, 16, 1, 8, 8, generator=g))
        sample(dit, small, cond, steps=1, cfg=5.0, shift=5.0, sampler="euler")  # kernel warm-up
        out: dict[str, Any] = {"batched_available": has_batch, "tokens": lat.samples.shape[2] * 30 * 52}
        for mode in (["sequential", "batched"] if has_batch else ["sequential"]):
            kw = {"batch_cfg": mode == "batched"} if has_batch else {}
            _reset_peak()
            t0 = time.perf_counter()
            sample(dit, lat, cond, steps=1, cfg=5.0, shift=5.0, sampler="euler", seed=0, **kw)
            out[mode] = time.perf_counter() - t0
            out[mode + "_peak"] = _status("VmHWM:")
        return out
    if kind == "vae":
        from engine.models.wan_vae import load_vae

        vae = load_vae(task["path"], device="cpu", dtype="auto", compute_hash=False)
        frames = task["frames"]
        lat = torch.randn(1, 16, (frames - 1) // 4 + 1, 60, 104,
                          generator=torch.Generator().manual_seed(0)) * 0.5
        _reset_peak()
        base = _status("VmRSS:")
        t0 = time.perf_counter()
        out = vae.decode(lat, tile=task["tile"] or None)
        return {"seconds": time.perf_counter() - t0, "base": base, "peak": _status("VmHWM:"),
                "shape": list(out.shape)}
    raise ValueError(kind)


def run_child(task: dict[str, Any], timeout: float = 1500) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(task)], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- report --------------------------------------------------------------------------------------

def _g(n: float) -> str:
    return f"{n / GIB:5.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 of the 24 UMT5 blocks")
    ap.add_argument("--dir", type=Path, default=None, help="where to build the files (kept)")
    ap.add_argument("--frames", type=int, default=None, help="frames for the s/step runs")
    ap.add_argument("--vae-frames", type=int, default=None)
    ap.add_argument("--t5-layers", type=int, default=None)
    ap.add_argument("--skip", default="", help="comma list of: load,t5,step,vae")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    frames = args.frames or 1  # fp32 at 832x480x1 already takes ~1 min per call on 2 cores
    vae_frames = args.vae_frames or 5  # peaks are per 4-frame chunk; 17 frames take ~10 min
    t5_layers = args.t5_layers or (4 if args.quick else 24)
    skip = set(filter(None, args.skip.split(",")))
    folder = args.dir or Path(tempfile.mkdtemp(prefix="reelgraph-real-size-"))
    folder.mkdir(parents=True, exist_ok=True)
    need = (2.9 + 1.6 + 0.3 + 2.3 + 0.2 * t5_layers) * GIB
    free = shutil.disk_usage(folder).free
    if free < need:
        sys.exit(f"{folder}: {free / GIB:.1f} GiB free, the files need {need / GIB:.1f} GiB")
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} (shared machine: timings "
          f"vary with it); files in {folder}")

    import torch

    from engine.dtypes import cpu_fast_bf16

    print(f"torch {torch.__version__}; fast CPU bf16: {cpu_fast_bf16()}")
    pool = None
    files = {"fp16": folder / "wan2.1_t2v_1.3B_fp16.safetensors",
             "fp8s": folder / "wan2.1_t2v_1.3B_fp8_scaled.safetensors",
             "vae": folder / "wan_2.1_vae.safetensors",
             "t5": folder / f"umt5_xxl_fp8_e4m3fn_scaled_{t5_layers}blocks.safetensors",
             "warm": folder / "tiny_dit.safetensors"}
    t0 = time.perf_counter()
    for key, path in files.items():
        if path.exists():
            continue
        pool = pool or _Pool()
        if key == "fp16":
            build_dit(path, False, pool)
        elif key == "fp8s":
            build_dit(path, True, pool)
        elif key == "vae":
            build_vae(path)
        elif key == "t5":
            build_umt5(path, t5_layers, pool)
        else:
            from tests.tiny_models import write_dit

            write_dit(path)
    del pool
    print(f"built in {time.perf_counter() - t0:.0f} s: " + ", ".join(
        f"{p.name} {p.stat().st_size / GIB:.2f} GiB" for p in files.values()))

    if "load" not in skip:
        print("\n== DiT load (Wan 2.1 T2V 1.3B), CPU ==")
        print(f"{'file -> dtype':28} {'policy':10} {'time s':>7} {'peak GiB':>9} {'load + GiB':>10} "
              f"{'weights GiB':>11}  vs before")
        cases = [("fp16", "auto"), ("fp16", "bf16"), ("fp16", "fp32"), ("fp16", "fp8"), ("fp8s", "fp8")]
        for src, dtype in cases:
            r = run_child({"kind": "load_dit", "path": str(files[src]), "warm": str(files["warm"]),
                           "dtype": dtype})
            if "error" in r:
                print(f"{src} -> {dtype}: failed: {r['error']}")
                continue
            grew = r["peak"] - r["base"]
            note = ""
            if (src, dtype) in (("fp16", "auto"), ("fp16", "fp32")):
                note = (f"peak {r['peak'] / GIB / BEFORE['dit_auto_peak']:.2f}x of {BEFORE['dit_auto_peak']}"
                        f" GiB (auto then held fp32 {BEFORE['dit_auto_resident']} GiB)")
            elif dtype == "fp8":
                note = f"peak {r['peak'] / GIB / BEFORE['dit_fp8_peak']:.2f}x of {BEFORE['dit_fp8_peak']} GiB"
            target = f"load + <= weights + 0.5: {'yes' if grew <= r['weights'] + 0.5 * GIB else 'NO'}"
            name = f"{'fp16' if src == 'fp16' else 'scaled fp8'} -> {dtype}"
            print(f"{name:28} {r['policy']:10} {r['seconds']:7.1f} {_g(r['peak']):>9} {_g(grew):>10} "
                  f"{_g(r['weights']):>11}  {note}; {target}")
    if "t5" not in skip:
        print(f"\n== UMT5-XXL scaled fp8 ({t5_layers} of 24 blocks), CPU ==")
        for dtype in (["fp8", "auto"] if t5_layers < 24 else ["fp8"]):
            r = run_child({"kind": "load_t5", "path": str(files["t5"]), "dtype": dtype})
            if "error" in r:
                print(f"dtype {dtype}: failed: {r['error']}")
                continue
            per_block = (r["weights"] - r["embedding"]) / t5_layers  # bytes one more block adds
            full = r["encode_peak"] + (24 - t5_layers) * per_block
            print(f"dtype {dtype:5} ({r['policy']} Linears): load {r['seconds']:.1f} s, peak "
                  f"{_g(r['peak'])} GiB (load + {_g(r['peak'] - r['base'])}), weights "
                  f"{_g(r['weights'])} GiB; one 512-token encode {r['encode_seconds']:.1f} s, peak "
                  f"with it {_g(r['encode_peak'])} GiB"
                  + (f"; 24 blocks: ~{_g(full)} GiB" if t5_layers < 24 else "")
                  + f" (before: {BEFORE['t5_peak_low']:.0f}-{BEFORE['t5_peak_high']:.0f} GiB "
                    f"extrapolated; <= 8 GiB: {'yes' if full <= 8 * GIB else 'NO'})")
    if "step" not in skip:
        tok = ((frames - 1) // 4 + 1) * 30 * 52
        print(f"\n== one sampling step, 832x480x{frames} ({tok} tokens), cfg 5, CPU ==")
        if frames < 17:
            print(f"   ({frames} frame(s), not 17 or 81: a full-size step in fp32 on this 2-core CPU "
                  "takes minutes per call; the ratios are what this measures)")
        res = {}
        for dtype in ("fp32", "bf16"):
            r = run_child({"kind": "step", "path": str(files["fp16"]), "dtype": dtype,
                           "frames": frames}, timeout=2400)
            res[dtype] = r
            if "error" in r:
                print(f"{dtype}: failed: {r['error']}")
                continue
            line = f"{dtype}: sequential cfg {r['sequential']:.1f} s/step (peak {_g(r['sequential_peak'])} GiB)"
            if r.get("batched_available"):
                line += (f", batched cfg {r['batched']:.1f} s/step (peak {_g(r['batched_peak'])} GiB)"
                         f", batched/sequential time {r['batched'] / r['sequential']:.2f}")
            else:
                line += "; batched cfg unavailable (engine.sampling.sample has no batch_cfg)"
            print(line)
        if all("sequential" in res[d] for d in ("fp32", "bf16")):
            print(f"bf16 vs fp32 (sequential): {res['fp32']['sequential'] / res['bf16']['sequential']:.2f}x "
                  "faster (issue 16 measured 1.8x on this CPU)")
    if "vae" not in skip:
        print(f"\n== VAE decode 832x480x{vae_frames}, CPU fp32 ==")
        out = {}
        for tile in (0, 256):
            r = run_child({"kind": "vae", "path": str(files["vae"]), "frames": vae_frames, "tile": tile},
                          timeout=2400)
            out[tile] = r
            if "error" in r:
                print(f"tile {tile}: failed: {r['error']}")
                continue
            before = BEFORE["vae_tiled_peak"] if tile else BEFORE["vae_untiled_peak"]
            print(f"{'tiled 256 px' if tile else 'untiled':13} {r['seconds']:6.1f} s, peak {_g(r['peak'])} "
                  f"GiB (decode + {_g(r['peak'] - r['base'])}); before at 17 frames: peak {before} GiB")
        if all("seconds" in out[t] for t in (0, 256)):
            print(f"tiled/untiled time {out[256]['seconds'] / out[0]['seconds']:.2f} "
                  f"(before {BEFORE['vae_tiled_slowdown']})")
    print(f"\nfiles kept in {folder}" if args.dir else "")
    if not args.dir:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
