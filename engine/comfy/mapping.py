"""ComfyUI graph -> Reelgraph workflow: node by node, plus the rewrites where grains differ.

Rewrites (ComfyUI spreads over several nodes what one Reelgraph node does, or the reverse):
- the CLIPTextEncode pair feeding a sampler's positive and negative -> one TextEncode (followed
  through WanImageToVideo-style nodes that pass conditioning on);
- EmptyHunyuanLatentVideo / EmptyLatentImage + the sampler's seed + CreateVideo's fps -> NoiseInit;
- ModelSamplingSD3's shift -> the denoiser's shift (the node itself disappears);
- KSampler / KSamplerAdvanced -> DiTDenoise (sampler names mapped, step ranges when supported);
- CreateVideo disappears (a Reelgraph VAEDecode already gives a VIDEO); its fps goes to the
  node that starts the latent.
Node types other engineers may add (LoadLoRA, LoadCLIPVision, CLIPVisionEncode, WanImageToVideo,
DiTDenoise's step range) are used when the registry has them, matched by input name; otherwise
the ComfyUI node stays a placeholder with the reason. Nothing is dropped without a report line.
"""

from __future__ import annotations

import re
from typing import Any

from engine.comfy.graph import MODES, CGraph, CNode, Ref
from engine.comfy.report import ImportReport
from engine.document import NodeInstance, Workflow
from engine.registry import NodeRegistry
from engine.schema import NodeSpec
from engine.sockets import SocketType

SAMPLER_TYPES = ("KSampler", "KSamplerAdvanced")
EMPTY_LATENTS = ("EmptyHunyuanLatentVideo", "EmptyLatentImage")
COND_PASSERS = ("WanImageToVideo", "WanFirstLastFrameToVideo")  # positive/negative in -> out
MODEL_PASSERS = ("ModelSamplingSD3", "LoraLoader", "LoraLoaderModelOnly")
COMFY_WAN_SHIFT = 8.0  # ComfyUI's own model-sampling shift for Wan when no ModelSamplingSD3 is set
SAMPLER_NAMES = {"euler": "euler", "euler_ancestral": "euler", "uni_pc": "unipc", "uni_pc_bh2": "unipc"}
FLOW_SCHEDULERS = ("simple", "normal", "sgm_uniform")  # what the flow-matching loop's sigmas match
MODEL_KINDS = {"UNETLoader": ("unet_name", "diffusion_models"), "CLIPLoader": ("clip_name", "text_encoders"),
               "VAELoader": ("vae_name", "vae"), "CLIPVisionLoader": ("clip_name", "clip_vision"),
               "LoraLoader": ("lora_name", "loras"), "LoraLoaderModelOnly": ("lora_name", "loras")}
# Candidate ComfyUI input names for a Reelgraph input name, for spec-driven adapters.
ALIASES: dict[str, tuple[str, ...]] = {
    "frames": ("length",), "length": ("length",), "batch": ("batch_size",),
    "image": ("start_image", "image", "pixels"), "start_image": ("start_image",),
    "end_image": ("end_image",), "clip_vision": ("clip_vision", "clip_vision_output"),
    "clip_vision_output": ("clip_vision_output",), "image_embeds": ("clip_vision_output",),
    "clip_vision_start": ("clip_vision_output", "clip_vision_start_image"),
    "clip_vision_end": ("clip_vision_end_image",),
    "clip_vision_start_image": ("clip_vision_start_image",),
    "clip_vision_end_image": ("clip_vision_end_image",),
    "model": ("model", "clip_name", "lora_name"), "lora": ("lora_name",), "name": ("lora_name", "clip_name"),
    "strength": ("strength_model",), "crop": ("crop",), "vae": ("vae",),
}


class Mapper:
    """One import: builds `workflow` from `graph` and fills `report`."""

    def __init__(self, graph: CGraph, registry: NodeRegistry, report: ImportReport,
                 model_paths: Any = None):
        self.g, self.registry, self.report, self.model_paths = graph, registry, report, model_paths
        self.wf = Workflow()
        self.where: dict[tuple[str, int], tuple[str, str]] = {}  # comfy output -> our output
        self.alias: dict[tuple[str, int], Ref] = {}  # comfy output == another comfy output
        self.pending: list[tuple[str, str, Ref, CNode]] = []  # our input <- comfy output
        self.noise_of: dict[str, str] = {}  # empty-latent comfy id -> NoiseInit id
        self.encode_of: dict[tuple[str, str | None], str] = {}  # (pos, neg) comfy ids -> TextEncode
        self.folded: set[str] = set()  # comfy ids absorbed by a rewrite
        self.consumers = graph.consumers()

    # ---- entry point ----------------------------------------------------------------------------
    def run(self) -> Workflow:
        for note in self.g.notes:
            self.report.add("info", note[0], note[1], note[2])
        # samplers last: they link to what the nodes before them became
        order = sorted(self.g.nodes.values(), key=lambda n: (n.type in SAMPLER_TYPES, _id_key(n.id)))
        for node in order:
            self._map(node)
        for node in order:
            if node.type in ("CLIPTextEncode", *EMPTY_LATENTS) and node.id not in self.folded:
                self._unfolded(node)
        self._fps()
        self._links()
        self._restore()
        self._layout()
        return self.wf

    def _restore(self) -> None:
        """Values Reelgraph's export-comfy kept in `_meta.reelgraph` (ComfyUI has no place for
        them) go back onto the node they came from, when it is still of that type and unlinked."""
        for n in self.g.nodes.values():
            kept = n.reelgraph if isinstance(n.reelgraph, dict) else None
            if not kept or not isinstance(kept.get("inputs"), dict):
                continue
            for nid in self.report.mapped.get(n.id, []):
                node = self.wf.nodes.get(nid)
                if node is None or node.type != kept.get("type"):
                    continue
                linked = self.wf.links_into(nid)
                spec = self._spec(node.type)
                names = [k for k in kept["inputs"] if isinstance(k, str) and k not in linked
                         and spec is not None and spec.input(k) is not None]
                for name in names:
                    self.set(nid, name, kept["inputs"][name], n)
                if names:
                    self.report.add("info", n.id, n.type, "Reelgraph values restored from "
                                    f"_meta.reelgraph: {', '.join(names)}", nid)

    def _map(self, n: CNode) -> None:
        handler = getattr(self, f"_map_{n.type}", None)
        if n.mode not in MODES:
            self.report.add("warning", n.id, n.type, f"node mode {n.mode} has no Reelgraph "
                            "equivalent; imported as a normal node")
        if handler is not None:
            handler(n)
        elif n.type in ("CLIPTextEncode", *EMPTY_LATENTS):
            pass  # folded by the samplers (or mapped alone afterwards)
        else:
            self._placeholder(n, f"ComfyUI node type {n.type!r} has no Reelgraph equivalent")

    # ---- building blocks -----------------------------------------------------------------------
    def _new(self, our_type: str, n: CNode, inputs: dict[str, Any] | None = None, *,
             keep_title: bool = True, suffix: str = "") -> str:
        base = re.sub(r"[^0-9A-Za-z_:-]", "", f"{our_type.lower()}_{n.id}{suffix}")
        nid, k = base, 2
        while nid in self.wf.nodes:
            nid, k = f"{base}_{k}", k + 1
        node = NodeInstance(nid, our_type)
        node.mode = MODES.get(n.mode, "normal")
        if keep_title and n.title:
            node.title = n.title
        self.wf.nodes[nid] = node
        self.report.mapped.setdefault(n.id, []).append(nid)
        self._ui[nid] = n
        for name, value in (inputs or {}).items():
            self.set(nid, name, value, n)
        return nid

    @property
    def _ui(self) -> dict[str, CNode]:
        if not hasattr(self, "_ui_map"):
            self._ui_map: dict[str, CNode] = {}
        return self._ui_map

    def set(self, nid: str, name: str, value: Any, n: CNode) -> None:
        """Set our input `name` to a literal or (for a Ref) a link, checking it against the spec."""
        if value is None:
            return
        if isinstance(value, Ref):
            self.pending.append((nid, name, value, n))
            return
        node = self.wf.nodes[nid]
        spec = self.registry.spec(node.type)
        ispec = spec.input(name) if spec else None
        if ispec is not None and ispec.type == SocketType.INT and isinstance(value, float) and value.is_integer():
            value = int(value)
        if ispec is not None and ispec.type == SocketType.FLOAT and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        node.inputs[name] = value
        why = ispec.check_value(value) if ispec is not None and ispec.has_widget else None
        if why:
            self.report.add("warning", n.id, n.type, f"{name} = {value!r} is not valid here ({why}); "
                            "fix it before running", nid)

    def val(self, n: CNode, name: str, default: Any = None) -> Any:
        """A ComfyUI input's value: its link (the link wins) or its literal."""
        if name in n.links:
            return n.links[name]
        return n.values.get(name, default)

    def node_at(self, ref: Ref | None) -> CNode | None:
        return self.g.nodes.get(ref.node) if ref is not None else None

    def _spec(self, name: str) -> NodeSpec | None:
        return self.registry.spec(name)

    def _placeholder(self, n: CNode, reason: str) -> str:
        our_type = n.type if self.registry.get(n.type) is None else f"comfy.{n.type}"
        nid = self._new(our_type, n, suffix="")
        node = self.wf.nodes[nid]
        if n.known_widgets:
            node.inputs.update({k: v for k, v in n.values.items()})
        node.extra["comfy"] = {"id": n.id, "type": n.type, "reason": reason,
                               **({"widgets_values": n.raw_widgets} if n.raw_widgets is not None else {}),
                               **({"controls": n.controls} if n.controls else {})}
        for name, ref in n.links.items():
            self.pending.append((nid, name, ref, n))
        for slot in range(max(len(n.output_names), 1)):
            self.where[(n.id, slot)] = (nid, n.output_name(slot))
        self.report.add("placeholder", n.id, n.type, reason, nid)
        return nid

    def _outputs(self, n: CNode, nid: str, *names: str) -> None:
        for slot, name in enumerate(names):
            if name:
                self.where[(n.id, slot)] = (nid, name)

    def _model_name(self, n: CNode, widget: str, kind: str) -> Any:
        name = self.val(n, widget)
        if not isinstance(name, str):
            return name
        name = name.replace("\\", "/")
        if self.model_paths is None or not name:
            return name
        try:
            self.model_paths.resolve(kind, name)
        except Exception:  # ModelNotFoundError, or a kind this build does not know
            try:
                folders = [str(f) for f in self.model_paths.folders(kind)]
            except ValueError:
                folders = []
            looked = "; ".join(folders) or "no model roots configured"
            self.report.add("warning", n.id, n.type, f"model file {name!r} ({kind}) not found; "
                            f"looked in: {looked}")
        return name

    def _adapt(self, our_type: str, n: CNode, skip: tuple[str, ...] = ()) -> str:
        """A node of a type someone else defines, filled by matching input names."""
        spec = self._spec(our_type)
        nid = self._new(our_type, n)
        kind = MODEL_KINDS.get(n.type)
        for ispec in spec.inputs if spec else ():
            if ispec.name in skip:
                continue
            for cname in (ispec.name, *ALIASES.get(ispec.name, ())):
                if cname in n.links or cname in n.values:
                    value = self.val(n, cname)
                    if kind and cname == kind[0]:
                        value = self._model_name(n, cname, kind[1])
                    self.set(nid, ispec.name, value, n)
                    break
        return nid

    # ---- loaders -------------------------------------------------------------------------------
    def _map_UNETLoader(self, n: CNode) -> None:  # noqa: N802
        dtype = self.val(n, "weight_dtype", "default")
        ours = {"default": "auto"}.get(dtype, "fp8" if isinstance(dtype, str) and dtype.startswith("fp8") else "auto")
        nid = self._new("LoadDiT", n, {"model": self._model_name(n, "unet_name", "diffusion_models")})
        spec = self._spec("LoadDiT")
        choices = spec.input("dtype").choices if spec and spec.input("dtype") else None
        if choices and ours not in choices:
            self.report.add("warning", n.id, n.type, f"weight_dtype {dtype!r} not offered; auto used", nid)
            ours = "auto"
        self.set(nid, "dtype", ours, n)
        self._outputs(n, nid, "model")

    _map_UnetLoaderGGUF = _map_UNETLoader  # ComfyUI-GGUF's loader: LoadDiT reads .gguf itself

    def _map_CLIPLoader(self, n: CNode) -> None:  # noqa: N802
        nid = self._new("LoadTextEncoder", n, {"model": self._model_name(n, "clip_name", "text_encoders")})
        if n.values.get("type", "wan") not in ("wan", None):
            self.report.add("warning", n.id, n.type, f"CLIP type {n.values['type']!r}: Reelgraph "
                            "loads Wan's UMT5 text encoders; the type is ignored", nid)
        self._outputs(n, nid, "encoder")

    def _map_VAELoader(self, n: CNode) -> None:  # noqa: N802
        nid = self._new("LoadVAE", n, {"vae": self._model_name(n, "vae_name", "vae")})
        self._outputs(n, nid, "vae")

    def _map_CLIPVisionLoader(self, n: CNode) -> None:  # noqa: N802
        self._optional_type("LoadCLIPVision", n)

    def _map_CLIPVisionEncode(self, n: CNode) -> None:  # noqa: N802
        self._optional_type("CLIPVisionEncode", n)

    def _map_LoraLoaderModelOnly(self, n: CNode) -> None:  # noqa: N802
        self._optional_type("LoadLoRA", n)

    def _map_LoraLoader(self, n: CNode) -> None:  # noqa: N802
        nid = self._optional_type("LoadLoRA", n, skip=("clip",))
        if "clip" in n.links:  # output 1 (CLIP) passes the text encoder through unchanged
            self.alias[(n.id, 1)] = n.links["clip"]
            if self.val(n, "strength_clip", 0) not in (0, 0.0):
                self.report.add("warning", n.id, n.type, "the LoRA's text-encoder part "
                                f"(strength_clip {n.values.get('strength_clip')}) is not applied; "
                                "Reelgraph patches the DiT only", nid)

    def _optional_type(self, our_type: str, n: CNode, skip: tuple[str, ...] = ()) -> str:
        spec = self._spec(our_type)
        if spec is None:
            return self._placeholder(n, f"Reelgraph has no {our_type} node yet (being added: "
                                     "issue 15); re-import once it exists")
        nid = self._adapt(our_type, n, skip)
        if spec.outputs:
            self.where[(n.id, 0)] = (nid, spec.outputs[0].name)
        return nid

    def _map_ModelSamplingSD3(self, n: CNode) -> None:  # noqa: N802
        if "model" in n.links:
            self.alias[(n.id, 0)] = n.links["model"]
        self.folded.add(n.id)
        self.report.add("info", n.id, n.type, f"shift {self.val(n, 'shift')!r} moved onto the "
                        "denoiser(s) it feeds; node removed")

    # ---- sampling -------------------------------------------------------------------------------
    def _map_KSampler(self, n: CNode) -> None:  # noqa: N802
        self._sampler(n, seed_name="seed")

    def _map_KSamplerAdvanced(self, n: CNode) -> None:  # noqa: N802
        self._sampler(n, seed_name="noise_seed")

    def _sampler(self, n: CNode, seed_name: str) -> None:
        spec = self._spec("DiTDenoise")
        nid = self._new("DiTDenoise", n)
        self._outputs(n, nid, "latent")
        seed = self.val(n, seed_name, 0)
        for ours, theirs in (("steps", "steps"), ("cfg", "cfg"), ("seed", seed_name), ("denoise", "denoise")):
            if theirs in n.links or theirs in n.values:
                self.set(nid, ours, self.val(n, theirs), n)
        self._seed_control(nid, "seed", n.controls.get(seed_name))
        self._sampler_name(n, nid, spec)
        self._step_range(n, nid, spec)
        if "model" in n.links:
            self.set(nid, "model", n.links["model"], n)
            self.set(nid, "shift", self._shift(n, n.links["model"]), n)
        else:
            self.report.add("warning", n.id, n.type, "no model linked", nid)
        self._conditioning(n, nid)
        self._latent(n, nid, seed, seed_name)

    def _sampler_name(self, n: CNode, nid: str, spec: NodeSpec | None) -> None:
        name = self.val(n, "sampler_name", "euler")
        choices = spec.input("sampler").choices if spec and spec.input("sampler") else ()
        if isinstance(name, Ref):
            self.set(nid, "sampler", name, n)
        elif name in (choices or ()):
            self.set(nid, "sampler", name, n)
        elif SAMPLER_NAMES.get(name) in (choices or ()):
            ours = SAMPLER_NAMES[name]
            self.set(nid, "sampler", ours, n)
            if name not in ("uni_pc", "uni_pc_bh2"):
                self.report.add("warning", n.id, n.type, f"sampler {name!r} mapped to {ours!r} "
                                "(the nearest Reelgraph sampler)", nid)
        else:
            fallback = choices[0] if choices else "unipc"
            self.set(nid, "sampler", fallback, n)
            self.report.add("warning", n.id, n.type, f"sampler {name!r} has no Reelgraph "
                            f"equivalent; {fallback!r} used (choices: {', '.join(choices)})", nid)
        sched = self.val(n, "scheduler", "simple")
        sspec = spec.input("scheduler") if spec else None
        if sspec is not None and isinstance(sched, str) and (sspec.choices is None or sched in sspec.choices):
            self.set(nid, "scheduler", sched, n)
        elif sched not in FLOW_SCHEDULERS:
            self.report.add("warning", n.id, n.type, f"scheduler {sched!r} is not available; the "
                            "flow-matching schedule with the shift is used", nid)

    def _step_range(self, n: CNode, nid: str, spec: NodeSpec | None) -> None:
        if n.type != "KSamplerAdvanced":
            return
        steps = self.val(n, "steps", 20)
        start = self.val(n, "start_at_step", 0)
        end = self.val(n, "end_at_step", 10000)
        # ComfyUI's 10000 means "to the last step", as DiTDenoise's: kept as written
        last = steps if isinstance(end, int) and isinstance(steps, int) and end > steps else end
        add_noise = self.val(n, "add_noise", "enable")
        leftover = self.val(n, "return_with_leftover_noise", "disable")
        wanted = {"start_step": start, "end_step": end,
                  "add_noise": add_noise == "enable" if isinstance(add_noise, str) else add_noise,
                  "return_with_leftover_noise": leftover == "enable" if isinstance(leftover, str) else leftover}
        full = start in (0, None) and (not isinstance(steps, int) or last == steps)
        missing = []
        for name, value in wanted.items():
            if spec is not None and spec.input(name) is not None:
                self.set(nid, name, value, n)
            else:
                missing.append(name)
        if missing and not full:
            self.report.add("warning", n.id, n.type, f"steps {start}-{last} of {steps}: this "
                            f"DiTDenoise has no {', '.join(missing)} input(s); it would run all steps", nid)

    def _shift(self, n: CNode, ref: Ref) -> Any:
        seen: set[str] = set()
        cur = self.node_at(ref)
        while cur is not None and cur.id not in seen and cur.type in MODEL_PASSERS:
            seen.add(cur.id)
            if cur.type == "ModelSamplingSD3":
                if MODES.get(cur.mode) == "normal":
                    return self.val(cur, "shift", COMFY_WAN_SHIFT)
                self.report.add("warning", cur.id, cur.type, "bypassed or muted: its shift is not "
                                f"applied; ComfyUI's Wan default {COMFY_WAN_SHIFT} used")
            cur = self.node_at(cur.links.get("model"))
        self.report.add("info", n.id, n.type, f"no ModelSamplingSD3 upstream: shift "
                        f"{COMFY_WAN_SHIFT} (ComfyUI's default for Wan) set on the denoiser")
        return COMFY_WAN_SHIFT

    def _trace_cond(self, ref: Ref | None, which: str) -> tuple[CNode | None, list[CNode]]:
        """The CLIPTextEncode behind a sampler's positive/negative, and the nodes passed on the
        way (WanImageToVideo and the like, nearest first)."""
        chain: list[CNode] = []
        cur = self.node_at(ref)
        while cur is not None and cur.type in COND_PASSERS and cur not in chain:
            chain.append(cur)
            cur = self.node_at(cur.links.get(which))
        return cur, chain

    def _conditioning(self, n: CNode, nid: str) -> None:
        pos, chain = self._trace_cond(n.links.get("positive"), "positive")
        neg, _ = self._trace_cond(n.links.get("negative"), "negative")
        if pos is None or pos.type != "CLIPTextEncode":
            if "positive" in n.links:
                self.set(nid, "conditioning", n.links["positive"], n)
                self.report.add("warning", n.id, n.type, "positive conditioning does not come from "
                                "a CLIPTextEncode; linked as is, the negative is not carried", nid)
            return
        if neg is not None and neg.type != "CLIPTextEncode":
            self.report.add("warning", n.id, n.type, f"negative comes from {neg.type}, not a "
                            "CLIPTextEncode; no negative prompt used", nid)
            neg = None
        key = (pos.id, neg.id if neg else None)
        te = self.encode_of.get(key)
        if te is None:
            te = self._new("TextEncode", pos, keep_title=False, suffix=f"_{neg.id}" if neg else "")
            self.encode_of[key] = te
            self.folded.add(pos.id)
            self.set(te, "prompt", self.val(pos, "text", ""), pos)
            if neg is not None:
                self.folded.add(neg.id)
                self.report.mapped.setdefault(neg.id, []).append(te)
                self.set(te, "negative_prompt", self.val(neg, "text", ""), neg)
                if neg.links.get("clip") != pos.links.get("clip"):
                    self.report.add("warning", neg.id, neg.type, "the negative prompt used another "
                                    "text encoder; the positive's is used for both", te)
            if "clip" in pos.links:
                self.set(te, "encoder", pos.links["clip"], pos)
            for c in (pos, neg):
                if c is not None and MODES.get(c.mode) != "normal":
                    self.report.add("warning", c.id, c.type, "muted or bypassed text encode folded "
                                    "into a normal TextEncode", te)
            self.report.add("info", pos.id, pos.type, "positive and negative CLIPTextEncode "
                            f"(#{pos.id}, #{neg.id if neg else '-'}) merged into one TextEncode", te)
        self.where[(pos.id, 0)] = (te, "conditioning")
        target = chain[0] if chain else None
        if target is not None and (target.id, 0) in self.where:
            src_node, _ = self.where[(target.id, 0)]
            spec = self._spec(self.wf.nodes[src_node].type)
            cond_in = [i.name for i in spec.inputs if i.type == SocketType.CONDITIONING] if spec else []
            if cond_in:
                self.set(src_node, cond_in[0], Ref(pos.id, 0), target)
                self.set(nid, "conditioning", Ref(target.id, 0), n)
                return
        self.set(nid, "conditioning", Ref(pos.id, 0), n)

    def _latent(self, n: CNode, nid: str, seed: Any, seed_name: str) -> None:
        ref = n.links.get("latent_image")
        src = self.node_at(ref)
        if src is None:
            self.report.add("warning", n.id, n.type, "no latent linked", nid)
            return
        adds_noise = self.val(n, "add_noise", "enable") != "disable"
        if src.type in EMPTY_LATENTS:
            noise = self._noise(src, n, seed if adds_noise else None)
            if adds_noise:
                self._seed_control(noise, "seed", n.controls.get(seed_name))
            self.set(nid, "latent", Ref(src.id, 0), n)
            return
        self.set(nid, "latent", ref, n)
        if (src.id, ref.slot) in self.where and adds_noise and src.type not in SAMPLER_TYPES:
            start = self.wf.nodes[self.where[(src.id, ref.slot)][0]]
            spec = self._spec(start.type)
            if spec is not None and spec.input("seed") is not None and "seed" not in start.inputs:
                self.set(start.id, "seed", seed, n)

    def _noise(self, src: CNode, sampler: CNode | None, seed: Any) -> str:
        if src.id in self.noise_of:
            noise = self.noise_of[src.id]
            if seed is not None and self.wf.nodes[noise].inputs.get("seed", seed) != seed:
                self.report.add("warning", sampler.id if sampler else src.id, "sampler",
                                "two samplers share this empty latent with different seeds; the "
                                "first one's seed is used", noise)
            return noise
        image = src.type == "EmptyLatentImage"
        noise = self._new("NoiseInit", src)
        self.noise_of[src.id] = noise
        self.folded.add(src.id)
        self._outputs(src, noise, "latent")
        self.set(noise, "width", self.val(src, "width"), src)
        self.set(noise, "height", self.val(src, "height"), src)
        self.set(noise, "frames", 1 if image else self.val(src, "length"), src)
        self.set(noise, "batch", self.val(src, "batch_size"), src)
        self.set(noise, "seed", seed if seed is not None else 0, src)
        vae = self._vae_for(sampler) if sampler is not None else None
        if vae is not None:
            self.set(noise, "vae", vae, src)
        else:
            self.report.add("warning", src.id, src.type, "no VAE found to put the noise on its "
                            "latent grid; link one to NoiseInit.vae", noise)
        self.report.add("info", src.id, src.type, "became NoiseInit (size and frames from it, "
                        "seed from the sampler, fps from CreateVideo or the save node)", noise)
        return noise

    def _vae_for(self, sampler: CNode) -> Ref | None:
        """The VAE that decodes this sampler's result (downstream, through further samplers)."""
        todo, seen = [sampler.id], set()
        while todo:
            cid = todo.pop()
            if cid in seen:
                continue
            seen.add(cid)
            for dst, _name in self.consumers.get((cid, 0), []):
                node = self.g.nodes[dst]
                if node.type in ("VAEDecode", "VAEDecodeTiled") and "vae" in node.links:
                    return node.links["vae"]
                if node.type in SAMPLER_TYPES:
                    todo.append(dst)
        loaders = [n for n in self.g.nodes.values() if n.type == "VAELoader"]
        return Ref(loaders[0].id, 0) if loaders else None

    def _seed_control(self, nid: str, name: str, mode: str | None) -> None:
        """ComfyUI's control_after_generate onto the studio's seed control (layout entry
        `seed_control`; randomize is also listed under `randomize`, which older studios read)."""
        if mode not in ("increment", "decrement", "randomize"):
            return
        entry = self.wf.layout.setdefault("nodes", {}).setdefault(nid, {})
        entry.setdefault("seed_control", {})[name] = mode
        if mode == "randomize" and name not in entry.setdefault("randomize", []):
            entry["randomize"].append(name)

    def _unfolded(self, n: CNode) -> None:
        if n.type == "CLIPTextEncode":
            nid = self._new("TextEncode", n)
            self.set(nid, "prompt", self.val(n, "text", ""), n)
            if "clip" in n.links:
                self.set(nid, "encoder", n.links["clip"], n)
            self.where[(n.id, 0)] = (nid, "conditioning")
            self.report.add("info", n.id, n.type, "not feeding a sampler's positive: a TextEncode "
                            "of its own (no negative prompt)", nid)
        else:
            self._noise(n, None, None)

    # ---- VAE, conditioning, video -----------------------------------------------------------------
    def _map_VAEDecode(self, n: CNode) -> None:  # noqa: N802
        nid = self._new("VAEDecode", n, {"latent": n.links.get("samples"), "vae": n.links.get("vae")})
        self._outputs(n, nid, "video")

    def _map_VAEDecodeTiled(self, n: CNode) -> None:  # noqa: N802
        nid = self._new("VAEDecode", n, {"latent": n.links.get("samples"), "vae": n.links.get("vae"),
                                         "tile_size": self.val(n, "tile_size"),
                                         "tile_overlap": self.val(n, "overlap")})
        self.report.add("info", n.id, n.type, "temporal_size/temporal_overlap not used: "
                        "Reelgraph's VAE decodes time causally without temporal tiles", nid)
        self._outputs(n, nid, "video")

    def _map_VAEEncode(self, n: CNode) -> None:  # noqa: N802
        nid = self._new("VAEEncode", n, {"video": n.links.get("pixels"), "vae": n.links.get("vae")})
        self._outputs(n, nid, "latent")

    def _map_WanImageToVideo(self, n: CNode) -> None:  # noqa: N802
        self._i2v(n, "WanImageToVideo")

    def _map_WanFirstLastFrameToVideo(self, n: CNode) -> None:  # noqa: N802
        # Reelgraph's WanImageToVideo takes a start and an end image: one node for both
        own = self._spec("WanFirstLastFrameToVideo") is not None
        self._i2v(n, "WanFirstLastFrameToVideo" if own else "WanImageToVideo")

    def _i2v(self, n: CNode, our_type: str) -> None:
        spec = self._spec(our_type)
        if spec is None:
            self._placeholder(n, f"Reelgraph has no {our_type} node yet (being added: issue 15)")
            return
        nid = self._adapt(our_type, n, skip=tuple(i.name for i in spec.inputs
                                                  if i.type == SocketType.CONDITIONING))
        outs = {o.type: o.name for o in spec.outputs}
        cond = outs.get(SocketType.CONDITIONING)
        if cond is not None:  # one CONDITIONING carries both prompts
            self.where[(n.id, 0)] = self.where[(n.id, 1)] = (nid, cond)
        else:  # our node does not carry conditioning: positive/negative pass by
            for slot, name in ((0, "positive"), (1, "negative")):
                if name in n.links:
                    self.alias[(n.id, slot)] = n.links[name]
        if SocketType.LATENT in outs:
            self.where[(n.id, 2)] = (nid, outs[SocketType.LATENT])

    def _map_Wan22ImageToVideoLatent(self, n: CNode) -> None:  # noqa: N802
        if "start_image" not in n.links:  # no image: exactly an empty latent
            self.report.add("info", n.id, n.type, "no start image: mapped as NoiseInit")
            n.values.setdefault("length", n.values.get("length", 81))
            noise = self._noise(CNode(n.id, "EmptyHunyuanLatentVideo", n.values, n.links, mode=n.mode,
                                      title=n.title, ui=n.ui), None, None)
            first = next((self.g.nodes[d] for d, _ in self.consumers.get((n.id, 0), [])), None)
            vae = n.links.get("vae") or (self._vae_for(first) if first else None)
            self.set(noise, "vae", vae, n)
            return
        nid = self._new("ImageToVideo", n, {"vae": n.links.get("vae"), "image": n.links.get("start_image"),
                                            "width": self.val(n, "width"), "height": self.val(n, "height"),
                                            "frames": self.val(n, "length")})
        self._outputs(n, nid, "latent")
        if self.val(n, "batch_size", 1) not in (1, None):
            self.report.add("warning", n.id, n.type, "batch_size > 1 is not supported by "
                            "ImageToVideo; one video is made", nid)

    def _map_GetVideoComponents(self, n: CNode) -> None:  # noqa: N802
        # a Reelgraph VIDEO is its frames plus fps: the images output is the video itself
        if "video" in n.links:
            self.alias[(n.id, 0)] = n.links["video"]
            self.alias[(n.id, 2)] = n.links["video"]
        self.folded.add(n.id)
        if self.consumers.get((n.id, 1)):
            self.report.add("warning", n.id, n.type, "audio is not carried: Reelgraph videos have "
                            "no sound track")
        self.report.add("info", n.id, n.type, "removed (a Reelgraph VIDEO carries its frames and fps)")

    def _map_CreateVideo(self, n: CNode) -> None:  # noqa: N802
        if "images" in n.links:
            self.alias[(n.id, 0)] = n.links["images"]
        self.folded.add(n.id)
        if "audio" in n.links:
            self.report.add("warning", n.id, n.type, "audio is not carried: Reelgraph videos have no sound track")
        self.report.add("info", n.id, n.type, "removed (VAEDecode already gives a VIDEO); its fps "
                        "goes to the node that starts the latent")

    # ---- outputs and inputs -----------------------------------------------------------------------
    def _map_SaveVideo(self, n: CNode) -> None:  # noqa: N802
        fmt = self.val(n, "format", "auto")
        ours = "webm" if fmt == "webm" else "mp4"
        if fmt not in ("auto", "mp4", "webm"):
            self.report.add("warning", n.id, n.type, f"format {fmt!r} saved as mp4")
        self._save_video(n, "video", ours)

    def _map_SaveWEBM(self, n: CNode) -> None:  # noqa: N802
        nid = self._save_video(n, "images", "webm")
        crf = self.val(n, "crf")
        self.set(nid, "crf", int(crf) if isinstance(crf, float) and crf.is_integer() else crf, n)
        if self.val(n, "codec", "vp9") != "vp9":
            self.report.add("warning", n.id, n.type, f"codec {n.values.get('codec')!r}: saved as VP9", nid)

    def _map_SaveAnimatedWEBP(self, n: CNode) -> None:  # noqa: N802
        nid = self._save_video(n, "images", "webp")
        dropped = [k for k in ("lossless", "quality", "method") if k in n.values]
        if dropped:
            self.report.add("info", n.id, n.type, f"{', '.join(dropped)} not carried (Reelgraph's "
                            "WebP encoder settings are fixed)", nid)

    def _save_video(self, n: CNode, link: str, fmt: str) -> str:
        return self._new("SaveVideo", n, {"video": n.links.get(link), "format": fmt,
                                          "filename_prefix": self.val(n, "filename_prefix")})

    def _map_SaveImage(self, n: CNode) -> None:  # noqa: N802
        self._new("SaveImage", n, {"images": n.links.get("images"),
                                   "filename_prefix": self.val(n, "filename_prefix")})

    def _map_PreviewImage(self, n: CNode) -> None:  # noqa: N802
        self._new("Preview", n, {"value": n.links.get("images")})

    def _map_LoadImage(self, n: CNode) -> None:  # noqa: N802
        nid = self._new("LoadImage", n, {"image": self.val(n, "image")})
        self._outputs(n, nid, "image")
        self.report.add("info", n.id, n.type, "the file name is looked up in Reelgraph's input "
                        "folder; copy it there from ComfyUI's input/", nid)

    def _map_LoadVideo(self, n: CNode) -> None:  # noqa: N802
        nid = self._new("LoadVideo", n, {"video": self.val(n, "file")})
        self._outputs(n, nid, "video")
        self.report.add("info", n.id, n.type, "the file name is looked up in Reelgraph's input "
                        "folder; copy it there from ComfyUI's input/", nid)

    def _primitive(self, n: CNode, our_type: str, name: str, out: str) -> None:
        nid = self._new(our_type, n, {name: self.val(n, "value")})
        self._outputs(n, nid, out)
        self._seed_control(nid, name, n.controls.get("value"))

    def _map_PrimitiveInt(self, n: CNode) -> None:  # noqa: N802
        self._primitive(n, "Int", "value", "value")

    def _map_PrimitiveFloat(self, n: CNode) -> None:  # noqa: N802
        self._primitive(n, "Float", "value", "value")

    def _map_PrimitiveString(self, n: CNode) -> None:  # noqa: N802
        self._primitive(n, "Text", "text", "text")

    _map_PrimitiveStringMultiline = _map_PrimitiveString

    def _map_Note(self, n: CNode) -> None:  # noqa: N802
        note: dict[str, Any] = {"title": n.title or n.type, "text": self.val(n, "text", ""),
                                "markdown": n.type == "MarkdownNote", "comfy_id": n.id}
        for key in ("pos", "size"):
            if key in n.ui and _xy(n.ui[key]) is not None:
                note[key] = _xy(n.ui[key])
        color = n.ui.get("bgcolor") or n.ui.get("color")
        if isinstance(color, str):
            note["color"] = color
        self.wf.layout.setdefault("notes", []).append(note)
        self.report.mapped.setdefault(n.id, [])
        self.report.add("info", n.id, n.type, "became a note on the canvas (layout.notes)")

    _map_MarkdownNote = _map_Note

    # ---- finishing ---------------------------------------------------------------------------------
    def _resolve(self, ref: Ref) -> tuple[str, str] | None:
        seen: set[tuple[str, int]] = set()
        key = (ref.node, ref.slot)
        while key in self.alias and key not in seen:
            seen.add(key)
            nxt = self.alias[key]
            key = (nxt.node, nxt.slot)
        return self.where.get(key)

    def _links(self) -> None:
        for nid, name, ref, n in self.pending:
            found = self._resolve(ref)
            if found is None:
                src = self.g.nodes.get(ref.node)
                what = f"#{ref.node} {src.type} output {ref.slot}" if src else f"missing node {ref.node}"
                self.report.add("warning", n.id, n.type, f"input {name!r}: its source ({what}) has "
                                "no Reelgraph equivalent; left unlinked", nid)
                continue
            src_id, out = found
            if self.wf.nodes[nid].type == "SaveImage" and name == "images":
                if self._out_type(src_id, out) == SocketType.VIDEO:
                    self._image_save_of_video(nid, n)
                    name = "video"
            self.wf.connect(src_id, out, nid, name)

    def _out_type(self, nid: str, out: str) -> SocketType | None:
        spec = self._spec(self.wf.nodes[nid].type)
        ospec = spec.output(out) if spec else None
        return ospec.type if ospec else None

    def _image_save_of_video(self, nid: str, n: CNode) -> None:
        node = self.wf.nodes[nid]
        node.type = "SaveVideo"
        node.inputs["format"] = "webp"
        self.report.add("warning", n.id, n.type, "saves decoded video frames: Reelgraph keeps them "
                        "as one VIDEO, so this is a SaveVideo writing an animated WebP", nid)

    def _fps(self) -> None:
        """CreateVideo's / a save node's fps onto the node that starts the latent it shows."""
        for n in self.g.nodes.values():
            if n.type not in ("CreateVideo", "SaveAnimatedWEBP", "SaveWEBM") or "fps" not in n.values:
                continue
            start = self._latent_start(n.links.get("images"))
            if start is None:
                self.report.add("warning", n.id, n.type, f"fps {n.values['fps']} could not be "
                                "placed: no latent-starting node found upstream")
                continue
            spec = self._spec(self.wf.nodes[start].type)
            if spec is not None and spec.input("fps") is not None:
                self.set(start, "fps", n.values["fps"], n)
            else:
                self.report.add("warning", n.id, n.type, f"fps {n.values['fps']}: "
                                f"{self.wf.nodes[start].type} has no fps input", start)

    def _latent_start(self, ref: Ref | None) -> str | None:
        seen: set[str] = set()
        cur = self.node_at(ref)
        while cur is not None and cur.id not in seen:
            seen.add(cur.id)
            if cur.type in SAMPLER_TYPES:
                cur = self.node_at(cur.links.get("latent_image"))
            elif cur.type in ("VAEDecode", "VAEDecodeTiled"):
                cur = self.node_at(cur.links.get("samples"))
            else:
                mapped = self.where.get((cur.id, 2 if cur.type in COND_PASSERS else 0))
                return mapped[0] if mapped else None
        return None

    def _layout(self) -> None:
        nodes = self.wf.layout.setdefault("nodes", {})
        for nid, n in self._ui.items():
            entry = nodes.setdefault(nid, {})
            if _xy(n.ui.get("pos")) is not None:
                entry["pos"] = _xy(n.ui["pos"])
            if _xy(n.ui.get("size")) is not None:
                entry["size"] = _xy(n.ui["size"])
            color = n.ui.get("bgcolor") or n.ui.get("color")
            if isinstance(color, str):
                entry["color"] = color
            if n.ui.get("collapsed"):
                entry["collapsed"] = True
        for nid in [k for k, v in nodes.items() if not v]:
            del nodes[nid]
        groups = []
        for g in self.g.groups:
            rect = g.get("bounding")
            if isinstance(rect, list) and len(rect) == 4 and all(_num(v) for v in rect):
                group = {"title": g.get("title") if isinstance(g.get("title"), str) else "Group",
                         "rect": [float(v) for v in rect]}
                if isinstance(g.get("color"), str):
                    group["color"] = g["color"]
                groups.append(group)
        if groups:
            self.wf.layout["groups"] = groups
        ds = self.g.view
        if ds and _num(ds.get("scale")) and _xy(ds.get("offset")) is not None:
            zoom = float(ds["scale"]) or 1.0
            ox, oy = _xy(ds["offset"])
            # ComfyUI stores the canvas offset; Reelgraph the scene point at the view's centre
            # (taken for a 1600x900 window, which is all the file tells us)
            self.wf.layout["view"] = {"center": [-ox + 800 / zoom, -oy + 450 / zoom], "zoom": zoom}


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) < 1e9


def _xy(v: Any) -> list[float] | None:
    """[x, y] from a list or the {"0": x, "1": y} object older ComfyUI saves write."""
    if isinstance(v, dict):
        v = [v.get("0"), v.get("1")]
    if isinstance(v, list) and len(v) >= 2 and _num(v[0]) and _num(v[1]):
        return [float(v[0]), float(v[1])]
    return None


def _id_key(cid: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in cid.split(":"))
