"""LoRAs for Wan DiTs: reading every key layout found in the wild, and applying them without
touching the cached base model.

Formats (all mapped onto the base module's diffusers names with engine.models.wan_dit's tables):
- Wan original / ComfyUI: `[diffusion_model.]blocks.N.self_attn.q.lora_down.weight`, `.lora_up.weight`,
  `.alpha`, or `.lora_A.weight` / `.lora_B.weight`;
- kohya / musubi-tuner: `lora_unet_blocks_N_self_attn_q.lora_down.weight` (+ `.alpha`);
- diffusers / PEFT: `transformer.blocks.N.attn1.to_q.lora_A.weight` / `.lora_B.weight` (also with a
  `diffusion_model.` prefix), `.lora_B.bias`;
- full differences, as distillation LoRAs (lightx2v) carry them: `.diff` (a whole weight or a bare
  parameter such as `blocks.N.modulation`) and `.diff_b` (a bias).
A pair's scale is strength * alpha / rank (no alpha: alpha = rank); a difference scales by strength.
Keys that match nothing are an error naming them; text-encoder keys are listed and not applied.

Invariants of `LoraDiT` (the model LoadLoRA outputs):
- The base model (a cached `WanDiT`, shared with other nodes) is never changed outside a
  `LoraDiT.predict_velocity` call: forward hooks on its Linear layers add
  strength * scale * up(down(x)) (unmerged, so exact, and the same on fp8/GGUF Linear subclasses),
  and the few non-Linear tensors a file changes (norms, modulation, conv) get their difference
  added in place with a backup of just those tensors; hooks are removed and tensors restored in a
  `finally`, also when the forward pass raises. Patching per call keeps the base clean between
  steps, so two wrappers of one base may even be interleaved.
- Memory: the LoRA tensors (CPU, as stored in the file) plus, inside `loaded()`, one copy of them
  on the compute device; never a second copy of the base weights.
- `loaded()` nests: the outermost entry holds the base on its device and stages the LoRA tensors
  there once; inner entries (predict_velocity inside a sampler's `loaded()`) cost nothing.
- A LoRA applied to a LoraDiT extends its list on the same base: one set of hooks, never nested.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from engine.errors import NodeError
from engine.models.interfaces import ModelInfo
from engine.models.safe_load import ModelLoadError, file_sha256, load_state_dict
from engine.models.wan_dit import BLOCK_NAMES, TOP_LEVEL_NAMES, _rename

# (suffix, role); longer suffixes first so ".diff_b" is not read as ".diff"
_SUFFIXES = (
    (".lora_down.weight", "down"), (".lora_up.weight", "up"),
    (".lora_A.default.weight", "down"), (".lora_B.default.weight", "up"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"), (".lora_B.bias", "diff_b"),
    (".alpha", "alpha"), (".diff_b", "diff_b"), (".diff", "diff"),
)
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.")
_KOHYA_PREFIXES = ("lora_unet_", "lora_transformer_")
_TEXT_ENCODER_PREFIXES = ("lora_te_", "lora_te1_", "lora_te2_", "text_encoder.", "text_encoders.",
                          "te.", "cond_stage_model.")
_BLOCK_INDEX = re.compile(r"^blocks[._](\d+)[._]")
_PLAIN_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass
class LinearPatch:
    """What one file adds to one Linear layer (diffusers module name): low-rank pairs
    (down (r, in), up (out, r), alpha / rank), a full weight difference, a bias difference."""

    pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = field(default_factory=list)
    diff: torch.Tensor | None = None
    diff_b: torch.Tensor | None = None


@dataclass
class LoraFile:
    """A LoRA file read and checked against one base model, ready to apply at any strength."""

    info: ModelInfo  # path, family "wan-lora", layout ("original"/"comfyui"/"kohya"/"diffusers"), sha256
    linear: dict[str, LinearPatch]  # diffusers module name -> patch (applied by forward hooks)
    params: dict[str, torch.Tensor]  # diffusers parameter name -> full difference at strength 1
    skipped: list[str]  # text-encoder keys (not applied)

    @property
    def name(self) -> str:
        return Path(self.info.path).name

    @property
    def nbytes(self) -> int:
        tensors = list(self.params.values())
        for patch in self.linear.values():
            tensors += [t for pair in patch.pairs for t in pair[:2]]
            tensors += [t for t in (patch.diff, patch.diff_b) if t is not None]
        return sum(t.element_size() * t.nelement() for t in tensors)


# ---- reading ----------------------------------------------------------------------------------

def load_lora(path: Path | str, model: Any, input: str = "lora", compute_hash: bool = True) -> LoraFile:
    """Read a LoRA file and check it against `model` (a WanDiT or LoraDiT). Any key that does not
    fit (unknown name, another model size) is a ModelLoadError naming the file and `input`."""
    path = Path(path)
    module = _base_module(model, input)
    state = load_state_dict(path)
    lora = parse_lora(state, module, path, input=input, family=_family(model))
    info = ModelInfo(path=str(path), family="wan-lora", layout=lora.info.layout,
                     sha256=file_sha256(path) if compute_hash else "")
    return LoraFile(info, lora.linear, lora.params, lora.skipped)


def parse_lora(state: Mapping[str, torch.Tensor], module: torch.nn.Module, source: Any = "<state dict>",
               input: str | None = "lora", family: str = "Wan") -> LoraFile:
    """Map a LoRA state dict onto `module` (a diffusers WanTransformer3DModel)."""
    def fail(problem: str) -> ModelLoadError:
        return ModelLoadError(source, problem, input=input)

    skipped = sorted(k for k in state if k.startswith(_TEXT_ENCODER_PREFIXES))
    entries: list[tuple[str, str, str, bool, str]] = []  # (key, name, role, kohya, prefix)
    no_suffix = []
    for key in state:
        if key in skipped:
            continue
        role = next(((key[: -len(s)], r) for s, r in _SUFFIXES if key.endswith(s)), None)
        if role is None:
            no_suffix.append(key)
            continue
        name, prefix, kohya = role[0], "", False
        for p in _KOHYA_PREFIXES:
            if name.startswith(p):
                name, prefix, kohya = name[len(p):], p, True
                break
        else:
            for p in _PREFIXES:
                if name.startswith(p):
                    name, prefix = name[len(p):], p
                    break
        entries.append((key, name, role[1], kohya, prefix))
    if not entries and not skipped:
        raise fail("this is not a LoRA: none of its keys end in lora_down/lora_up/lora_A/lora_B/"
                   "alpha/diff/diff_b (it looks like a full model; load that with LoadDiT from "
                   "diffusion_models, and pick a LoRA from the loras folder here)")

    index = _NameIndex(module)
    scheme = index.choose(entries)
    resolved: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}  # target -> role -> (key, tensor)
    unknown = list(no_suffix)
    too_deep = []
    for key, name, role, kohya, prefix in entries:
        target = index.resolve(name, scheme, kohya)
        if target is None:
            match = _BLOCK_INDEX.match(name)
            if match and int(match.group(1)) >= index.num_layers:
                too_deep.append(int(match.group(1)))
            else:
                unknown.append(key)
            continue
        slot = resolved.setdefault(target, {})
        if role in slot:
            raise fail(f"keys {slot[role][0]} and {key} both set the {role} of {target}")
        slot[role] = (key, state[key])
    if too_deep:
        raise fail(f"it has blocks up to {max(too_deep)} but this {family} model has "
                   f"{index.num_layers} blocks: the LoRA was made for a bigger model (e.g. a 14B "
                   f"LoRA on 1.3B); pick a LoRA made for {family}")
    if unknown:
        other = any(m in k for k in unknown for m in ("dora_scale", "lora_mid", "hada_", "lokr_"))
        kind = (" (DoRA, LoCon mid, LoHa and LoKr weights are not supported; use a plain LoRA)"
                if other else "")
        raise fail(f"{len(unknown)} of its keys match nothing in this {family} model, e.g. "
                   f"{', '.join(sorted(unknown)[:4])}{kind}; it may be made for another "
                   f"architecture — pick a LoRA made for {family}")

    linear: dict[str, LinearPatch] = {}
    params: dict[str, torch.Tensor] = {}
    for target, roles in resolved.items():
        _build(target, roles, index, linear, params, fail, family)
    layout = _layout(entries, scheme)
    return LoraFile(ModelInfo(path=str(source), family="wan-lora", layout=layout),
                    linear, params, skipped)


def _layout(entries: Sequence[tuple[str, str, str, bool, str]], scheme: str) -> str:
    if any(e[3] for e in entries):
        return "kohya"
    if scheme == "diffusers":
        return "diffusers"
    return "comfyui" if any(e[4] for e in entries) else "original"


def _build(target: str, roles: dict[str, tuple[str, torch.Tensor]], index: "_NameIndex",
           linear: dict[str, LinearPatch], params: dict[str, torch.Tensor],
           fail: Callable[[str], ModelLoadError], family: str) -> None:
    """Check one target's tensors against the module and file them as a hook patch or a param diff."""
    key_of = {role: key for role, (key, _) in roles.items()}
    t = {role: tensor for role, (_, tensor) in roles.items()}
    if ("down" in t) != ("up" in t):
        have, miss = ("down", "up") if "down" in t else ("up", "down")
        raise fail(f"{key_of[have]} has no matching {miss} matrix")
    if "alpha" in t and "down" not in t:
        raise fail(f"{key_of['alpha']} belongs to no lora_down/lora_up pair")

    def size_error(key: str, got: Any, want: Any) -> ModelLoadError:
        return fail(f"{key} has shape {tuple(got)} but {target} of this {family} model needs "
                    f"{tuple(want)}: the LoRA was made for another model size or architecture; "
                    f"pick a LoRA made for {family}")

    module = index.modules.get(target)
    if module is not None and _is_linear(module):
        out_f, in_f = int(module.out_features), int(module.in_features)
        patch = LinearPatch()
        if "down" in t:
            down, up = _matrix(t["down"]), _matrix(t["up"])
            if down.ndim != 2 or down.shape[1] != in_f:
                raise size_error(key_of["down"], t["down"].shape, ("rank", in_f))
            if up.ndim != 2 or up.shape != (out_f, down.shape[0]):
                raise size_error(key_of["up"], t["up"].shape, (out_f, down.shape[0]))
            patch.pairs.append((down, up, _alpha_scale(t.get("alpha"), down.shape[0])))
        if "diff" in t:
            if tuple(t["diff"].shape) != (out_f, in_f):
                raise size_error(key_of["diff"], t["diff"].shape, (out_f, in_f))
            patch.diff = t["diff"]
        if "diff_b" in t:
            if tuple(t["diff_b"].shape) != (out_f,):
                raise size_error(key_of["diff_b"], t["diff_b"].shape, (out_f,))
            patch.diff_b = t["diff_b"]
        linear[target] = patch
        return

    # a non-Linear module (norm, conv) or a bare parameter (scale_shift_table): in-place deltas
    def param(name: str, key: str) -> torch.Tensor:
        p = index.params.get(name)
        if p is None:
            raise fail(f"{key} targets {name}, which this {family} model does not have "
                       "(a norm without weights?); pick a LoRA made for this model")
        return p

    if module is None:  # bare parameter
        for role in ("down", "diff_b"):
            if role in t:
                raise fail(f"{key_of[role]}: {target} is a parameter, not a layer, so it takes "
                           "only a .diff")
        p = param(target, key_of["diff"])
        if tuple(t["diff"].shape) != tuple(p.shape):
            raise size_error(key_of["diff"], t["diff"].shape, p.shape)
        params[target] = t["diff"]
        return
    weight_delta = None
    if "down" in t:  # a low-rank pair on a conv: merge it (these tensors are small)
        p = param(f"{target}.weight", key_of["down"])
        down, up = t["down"].flatten(1).float(), t["up"].flatten(1).float()
        if up.shape[1] != down.shape[0] or up.shape[0] * down.shape[1] != p.numel():
            raise size_error(key_of["down"], t["down"].shape, p.shape)
        weight_delta = (up @ down).reshape(p.shape) * _alpha_scale(t.get("alpha"), down.shape[0])
    if "diff" in t:
        p = param(f"{target}.weight", key_of["diff"])
        if tuple(t["diff"].shape) != tuple(p.shape):
            raise size_error(key_of["diff"], t["diff"].shape, p.shape)
        weight_delta = t["diff"] if weight_delta is None else weight_delta + t["diff"].float()
    if weight_delta is not None:
        params[f"{target}.weight"] = weight_delta
    if "diff_b" in t:
        p = param(f"{target}.bias", key_of["diff_b"])
        if tuple(t["diff_b"].shape) != tuple(p.shape):
            raise size_error(key_of["diff_b"], t["diff_b"].shape, p.shape)
        params[f"{target}.bias"] = t["diff_b"]


def _matrix(t: torch.Tensor) -> torch.Tensor:
    """(r, in, 1, 1) as kohya writes Linear LoRAs sometimes -> (r, in)."""
    while t.ndim > 2 and t.shape[-1] == 1:
        t = t.squeeze(-1)
    return t


def _alpha_scale(alpha: torch.Tensor | None, rank: int) -> float:
    return 1.0 if alpha is None else float(alpha.float().reshape(-1)[0]) / rank


def _is_linear(module: torch.nn.Module) -> bool:
    # fp8 / GGUF layers may subclass nn.Linear or only mimic it
    return isinstance(module, torch.nn.Linear) or (
        hasattr(module, "in_features") and hasattr(module, "out_features")
        and not isinstance(module, torch.nn.modules.conv._ConvNd))


class _NameIndex:
    """Every name a LoRA may use for a module or parameter of the base, in the two naming schemes
    (Wan original, diffusers), dotted and kohya-flattened, mapped to the base's diffusers name."""

    def __init__(self, module: torch.nn.Module):
        self.modules = {n: m for n, m in module.named_modules() if n}
        self.params = dict(module.named_parameters())
        self.num_layers = int(getattr(getattr(module, "config", None), "num_layers", 0) or
                              len(getattr(module, "blocks", ())))
        top_inv = {v: k for k, v in TOP_LEVEL_NAMES.items()}
        block_inv = {v: k for k, v in BLOCK_NAMES.items()}
        names = set(self.modules) | set(self.params)
        self.by_scheme: dict[str, dict[str, str]] = {"diffusers": {n: n for n in names},
                                                     "original": {}}
        for n in names:
            original = _rename(n, top_inv, block_inv)
            if original is not None:
                self.by_scheme["original"][original] = n
        self.flat = {s: {k.replace(".", "_"): v for k, v in table.items()}
                     for s, table in self.by_scheme.items()}

    def resolve(self, name: str, scheme: str, kohya: bool) -> str | None:
        return (self.flat if kohya else self.by_scheme)[scheme].get(name)

    def choose(self, entries: Sequence[tuple[str, str, str, bool, str]]) -> str:
        """The scheme under which most names resolve (Wan's `norm2` and diffusers' `norm2` are
        different layers, so a file is read in one scheme, not key by key)."""
        hits = {s: sum(self.resolve(e[1], s, e[3]) is not None for e in entries)
                for s in ("original", "diffusers")}
        if hits["diffusers"] > hits["original"]:
            return "diffusers"
        if hits["diffusers"] == hits["original"] and any(e[4] in ("transformer.", "base_model.model.")
                                                         for e in entries):
            return "diffusers"
        return "original"


def _base_module(model: Any, input: str | None) -> torch.nn.Module:
    base = model.base if isinstance(model, LoraDiT) else model
    module = getattr(base, "module", None)
    if not isinstance(module, torch.nn.Module) or not hasattr(module, "blocks"):
        raise NodeError("LoRAs apply to a Wan DiT from LoadDiT; this model has no Wan transformer",
                        input="model")
    return module


def _family(model: Any) -> str:
    info = getattr(model, "info", None)
    return getattr(info, "family", None) or "Wan"


# ---- applying ---------------------------------------------------------------------------------

@dataclass
class _Staged:
    """The LoRA stack on the compute device for one `loaded()` entry."""

    hooks: dict[str, Callable[..., torch.Tensor]]  # module name -> forward hook
    params: dict[str, torch.Tensor]  # parameter name -> delta at the stack's strengths


class LoraDiT:
    """A DiT with a stack of LoRAs applied while it runs (see the module docstring). Anything it
    does not define (info, in_channels, text_dim, frame_timesteps, variant, policy, device, ...)
    is the base model's."""

    def __init__(self, base: Any, loras: Sequence[tuple[LoraFile, float]]):
        if isinstance(base, LoraDiT):  # a chain: one flat stack on the real base
            loras = [*base.loras, *loras]
            base = base.base
        self.base = base
        self.loras: tuple[tuple[LoraFile, float], ...] = tuple((f, float(s)) for f, s in loras)
        self._depth = 0
        self._staged: _Staged | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("base", "loras"):  # not set yet (e.g. unpickling)
            raise AttributeError(name)
        return getattr(self.base, name)

    def __repr__(self) -> str:
        stack = ", ".join(f"{f.name}@{s:g}" for f, s in self.loras)
        return f"LoraDiT({self.base!r} + [{stack}])"

    @property
    def provenance_info(self) -> ModelInfo | None:
        """The newest LoRA's file identity: what the LoadLoRA node that made this model records in
        the run's provenance (its LoadDiT records the base)."""
        return self.loras[-1][0].info if self.loras else None

    @property
    def nbytes(self) -> int:
        """What this adds to the cache (the base is counted where LoadDiT cached it)."""
        return sum(f.nbytes for f, _ in self.loras)

    @contextlib.contextmanager
    def loaded(self) -> Iterator["LoraDiT"]:
        """The base on its device and the LoRA tensors staged there, for a whole sampling loop."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        base_loaded = getattr(self.base, "loaded", None)
        with (base_loaded() if callable(base_loaded) else contextlib.nullcontext()):
            self._staged = self._stage()
            self._depth = 1
            try:
                yield self
            finally:
                self._depth = 0
                self._staged = None  # frees the device copies

    @torch.no_grad()
    def predict_velocity(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                         context_mask: torch.Tensor | None = None,
                         image_latent: torch.Tensor | None = None,
                         image_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """The base model's velocity with the LoRAs applied (see DiffusionModel)."""
        with self.loaded():
            assert self._staged is not None
            with _patched(self.base.module, self._staged):
                return self.base.predict_velocity(x, timestep, context, context_mask=context_mask,
                                                  image_latent=image_latent,
                                                  image_embeds=image_embeds)

    def _stage(self) -> _Staged:
        module = self.base.module
        modules = dict(module.named_modules())
        named_params = dict(module.named_parameters())
        compute = getattr(getattr(self.base, "policy", None), "compute", torch.float32)
        per_module: dict[str, list[tuple[LinearPatch, float]]] = {}
        params: dict[str, torch.Tensor] = {}
        for lora, strength in self.loras:
            if strength == 0.0:  # exactly the base: nothing to add
                continue
            for name, patch in lora.linear.items():
                per_module.setdefault(name, []).append((patch, strength))
            for name, diff in lora.params.items():
                p = named_params[name]
                delta = diff.to(p.device, torch.float32) * strength
                params[name] = params[name] + delta if name in params else delta
        # stage on the device the model computes on, not where each layer's weights wait: under
        # block swap (engine.memory) streamed blocks sit on the CPU between their calls
        device = getattr(self.base, "device", None)
        hooks = {name: _linear_hook(patches, modules[name], compute, device)
                 for name, patches in per_module.items()}
        return _Staged(hooks, params)


def apply_loras(model: Any, loras: Sequence[tuple[LoraFile, float]]) -> LoraDiT:
    """`model` with `loras` ((file, strength) pairs) added after any it already carries."""
    return LoraDiT(model, loras)


def _linear_hook(patches: Sequence[tuple[LinearPatch, float]], module: torch.nn.Module,
                 compute: torch.dtype, device: torch.device | None = None) -> Callable[..., torch.Tensor]:
    weight = getattr(module, "weight", None)
    # the dtype the layer computes in: its weights' when plain floats, else the model's policy
    dtype = weight.dtype if isinstance(weight, torch.Tensor) and weight.dtype in _PLAIN_FLOATS else compute
    if device is None:
        device = next((t.device for t in [*module.parameters(), *module.buffers()]), torch.device("cpu"))
    pairs = []  # (down, up * strength * alpha / rank)
    full: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    for patch, strength in patches:
        for down, up, scale in patch.pairs:
            pairs.append((down.to(device, dtype),
                          (up.to(device, torch.float32) * (strength * scale)).to(dtype)))
        if patch.diff is not None:
            d = patch.diff.to(device, torch.float32) * strength
            full = d if full is None else full + d
        if patch.diff_b is not None:
            b = patch.diff_b.to(device, torch.float32) * strength
            bias = b if bias is None else bias + b
    full = full.to(dtype) if full is not None else None
    bias = bias.to(dtype) if bias is not None else None

    def hook(_module: torch.nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        x = args[0].to(dtype)
        delta = None
        for down, up in pairs:
            if down.device != x.device:  # a layer that moved after staging (rare): follow it
                down, up = down.to(x.device), up.to(x.device)
            d = torch.nn.functional.linear(torch.nn.functional.linear(x, down), up)
            delta = d if delta is None else delta + d
        if full is not None:
            d = torch.nn.functional.linear(x, full.to(x.device))
            delta = d if delta is None else delta + d
        if bias is not None:
            delta = bias.to(x.device) if delta is None else delta + bias.to(x.device)
        return out + delta.to(out.dtype) if delta is not None else out

    return hook


_ACTIVE: set[int] = set()  # ids of base modules patched right now


@contextlib.contextmanager
def _patched(module: torch.nn.Module, staged: _Staged) -> Iterator[None]:
    """Hooks and in-place deltas on `module` inside the block; the exact original afterwards."""
    if id(module) in _ACTIVE:
        raise NodeError("this DiT is already running with LoRAs applied (a LoRA model called "
                        "from inside another one's forward pass)", input="model")
    _ACTIVE.add(id(module))
    modules = dict(module.named_modules())
    named_params = dict(module.named_parameters())
    handles = []
    backups: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for name, delta in staged.params.items():
                p = named_params[name]
                backups.append((p, p.detach().clone()))  # before the change, so a failure restores
                if p.dtype in _PLAIN_FLOATS:
                    p.add_(delta.to(p.dtype))
                else:
                    p.copy_((p.float() + delta).to(p.dtype))
        for name, hook in staged.hooks.items():
            handles.append(modules[name].register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for p, backup in reversed(backups):
                p.copy_(backup)
        _ACTIVE.discard(id(module))
