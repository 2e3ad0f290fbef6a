"""The option vocabularies node schemas offer: dtypes, samplers, conditioning modes.

Invariant: this module imports nothing, so the node registry (and `validate` / `nodes`) builds
every NodeSpec without torch. The engine modules that act on these names re-export them
(engine.dtypes.DTYPE_CHOICES, engine.sampling.SAMPLERS / SCHEDULERS, engine.conditioning.MODES,
engine.models.text_encoders.DTYPE_CHOICES), so either import works.
"""

# Weight precision of DiTs and VAEs (engine.dtypes.dtype_policy); fp8 = float8 weight storage.
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16", "fp8")
# Text encoders: fp8 = float8 Linear weights (a scaled-fp8 file's as stored), upcast per layer.
TEXT_ENCODER_DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16", "fp8")
# CLIP vision encoders compute in one dtype (no float8 storage there).
CLIP_VISION_DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
# Where a loader's model computes: auto = the run's device (CUDA when present).
DEVICE_CHOICES = ("auto", "cpu", "cuda")

# Samplers (engine.sampling): "unipc" is Wan's own reference solver (UniPC bh2, 2nd order, as
# diffusers' WanPipeline and the Wan repo set it up); the rest carry ComfyUI's names and meaning.
SAMPLERS = ("unipc", "uni_pc", "uni_pc_bh2", "euler", "dpmpp_2m", "lcm")
# Sigma schedules (engine.sampling): "default" is the sampler's own diffusers schedule (what every
# graph before schedulers existed used); simple/normal/beta are ComfyUI's definitions.
SCHEDULERS = ("default", "simple", "normal", "beta")

# Where engine.conditioning places known frames: head, tail, or both.
CONDITIONING_MODES = ("extend forward", "extend backward", "connect")
