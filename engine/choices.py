"""The option vocabularies node schemas offer: dtypes, samplers, conditioning modes.

Invariant: this module imports nothing, so the node registry (and `validate` / `nodes`) builds
every NodeSpec without torch. The engine modules that act on these names re-export them
(engine.devices.DTYPE_CHOICES, engine.sampling.SAMPLERS, engine.conditioning.MODES,
engine.models.text_encoders.DTYPE_CHOICES), so either import works.
"""

# Weight precision of DiTs and VAEs (engine.devices.dtype_policy); fp8 = float8 weight storage.
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16", "fp8")
# Text encoders compute in one dtype; fp8 storage is a diffusers feature, not offered there.
TEXT_ENCODER_DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")

# diffusers schedulers engine.sampling sets up as WanPipeline does.
SAMPLERS = ("unipc", "euler")

# Where engine.conditioning places known frames: head, tail, or both.
CONDITIONING_MODES = ("extend forward", "extend backward", "connect")
