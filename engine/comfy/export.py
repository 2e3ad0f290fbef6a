"""Reelgraph workflow -> ComfyUI API prompt (`{id: {class_type, inputs}}`), the inverse of
engine.comfy.mapping for the nodes that map:

- LoadDiT -> UNETLoader (UnetLoaderGGUF for .gguf); LoadTextEncoder -> CLIPLoader (type wan);
  LoadVAE -> VAELoader; LoadCLIPVision / CLIPVisionEncode; LoadLoRA -> LoraLoaderModelOnly;
- TextEncode -> two CLIPTextEncode (positive, negative) feeding the sampler's two inputs;
- NoiseInit -> EmptyHunyuanLatentVideo (its seed becomes the sampler's noise seed, its fps
  CreateVideo's / the save node's); ImageToVideo -> Wan22ImageToVideoLatent;
  WanImageToVideo -> WanImageToVideo or WanFirstLastFrameToVideo (with an end image);
- DiTDenoise -> ModelSamplingSD3 (its shift) + KSampler, or KSamplerAdvanced for a step range;
- VAEDecode -> VAEDecode / VAEDecodeTiled; VAEEncode; LoadVideo -> LoadVideo + GetVideoComponents;
- SaveVideo -> CreateVideo + SaveVideo (mp4) / SaveWEBM / SaveAnimatedWEBP; SaveImage;
  Preview -> PreviewImage; Int / Float / Text -> PrimitiveInt / PrimitiveFloat / PrimitiveStringMultiline;
- an imported placeholder goes back as the ComfyUI node it came from.

Values ComfyUI cannot hold (Reelgraph's own sampler/scheduler, a text encoder's max_length, a
denoiser seed other than the noise seed, ...) are reported and kept in the node's
`_meta.reelgraph.inputs`, which ComfyUI ignores and the importer restores. Anything else is
reported and left out: the exit code says so. Import-light: no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from engine.comfy.graph import OUTPUTS

Ref = list  # [comfy id, output slot], ComfyUI's API link

SAMPLERS_OUT = {"unipc": "uni_pc_bh2"}  # Reelgraph-only names -> nearest ComfyUI sampler
SCHEDULERS_OUT = {"default": "simple"}
SAVE_FORMATS = {"mp4", "webm", "webp", "gif"}


class ComfyExportError(ValueError):
    """The workflow cannot be exported at all (e.g. a link loop): one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems or ["unknown problem"]
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class ExportEntry:
    level: str  # "unmapped" (node left out), "warning" (value changed or dropped), "info"
    node_id: str | None
    node_type: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.node_id} ({self.node_type})" if self.node_id else "graph"
        return f"{self.level}: {where}: {self.message}"


@dataclass
class ExportReport:
    entries: list[ExportEntry] = field(default_factory=list)
    exported: dict[str, list[str]] = field(default_factory=dict)  # our id -> comfy ids

    def add(self, level: str, node: Any, message: str) -> None:
        entry = ExportEntry(level, getattr(node, "id", None), getattr(node, "type", None), message)
        if entry not in self.entries:
            self.entries.append(entry)

    @property
    def unmapped(self) -> list[ExportEntry]:
        return [e for e in self.entries if e.level == "unmapped"]

    def summary_line(self) -> str:
        w = sum(e.level == "warning" for e in self.entries)
        return (f"{len(self.exported)} node(s) exported, {len(self.unmapped)} left out, "
                f"{w} warning(s)")

    def lines(self) -> list[str]:
        order = {"unmapped": 0, "warning": 1, "info": 2}
        return [str(e) for e in sorted(self.entries, key=lambda e: order.get(e.level, 9))]


@dataclass
class _Cond:
    """A Reelgraph CONDITIONING is ComfyUI's positive + negative pair."""
    pos: Ref
    neg: Ref | None


@dataclass
class _Latent:
    ref: Ref
    seed: Any = None  # the noise seed a sampler must use to start from this latent
    fps: Any = None  # literal, or a Ref (LoadVideo's fps)
    start: Any = None  # the Reelgraph node that started it (NoiseInit, ImageToVideo, ...)


@dataclass
class _Video:
    images: Ref
    fps: Any = None


@dataclass
class ExportResult:
    prompt: dict[str, dict[str, Any]]
    report: ExportReport

    @property
    def exit_code(self) -> int:
        """0 every node exported, 1 some were left out (the CLI's codes)."""
        return 1 if self.report.unmapped else 0


def export_comfy(workflow: Any, registry: Any = None) -> ExportResult:
    """The ComfyUI API prompt for `workflow`. Raises only ComfyExportError."""
    if registry is None:
        from engine.registry import default_registry

        registry = default_registry()
    ex = _Exporter(workflow, registry)
    try:
        ex.run()
    except ComfyExportError:
        raise
    except RecursionError:
        raise ComfyExportError(["the workflow is nested too deeply"]) from None
    except Exception as exc:  # defensive: a hostile document never surfaces as a traceback
        raise ComfyExportError([f"cannot export ({type(exc).__name__}: {exc})"]) from None
    return ExportResult(ex.prompt, ex.report)


class _Exporter:
    def __init__(self, wf: Any, registry: Any):
        self.wf, self.registry = wf, registry
        self.prompt: dict[str, dict[str, Any]] = {}
        self.report = ExportReport()
        self.out: dict[tuple[str, str], Any] = {}  # (our node, output) -> Ref / _Cond / _Latent / _Video
        self.incoming = wf.incoming()
        self.shared: dict[Any, Ref] = {}  # memo: ModelSamplingSD3 per (model, shift), CreateVideo

    # ---- plumbing ------------------------------------------------------------------------------
    def run(self) -> None:
        for nid in self._order():
            node = self.wf.nodes[nid]
            if node.mode == "mute":
                self.report.add("info", node, "muted: not exported (ComfyUI leaves muted nodes "
                                "out of the prompt too)")
                continue
            if node.mode == "bypass":
                self._bypass(node)
                continue
            handler = getattr(self, f"_x_{node.type}", None)
            if handler is None and isinstance(node.extra.get("comfy"), dict):
                handler = self._x_placeholder
            if handler is None:
                self.report.add("unmapped", node, f"{node.type} has no ComfyUI equivalent; left out")
                continue
            handler(node)

    def _order(self) -> list[str]:
        """Node ids, every node after the nodes it links from; a loop is an error."""
        from engine.graph_index import GraphIndex

        done, stuck = GraphIndex(self.wf).topological_order(set(self.wf.nodes))
        if stuck:
            loop = sorted(stuck)
            raise ComfyExportError([f"link loop through nodes {', '.join(loop[:10])}"
                                    f"{' ...' if len(loop) > 10 else ''}: a graph with a cycle "
                                    "cannot be exported"])
        return done

    def _add(self, node: Any, class_type: str, inputs: dict[str, Any], *, title: str | None = None,
             lost: dict[str, Any] | None = None) -> str:
        cid = str(len(self.prompt) + 1)
        entry: dict[str, Any] = {"class_type": class_type,
                                 "inputs": {k: v for k, v in inputs.items() if v is not None}}
        meta: dict[str, Any] = {}
        if title or node.title:
            meta["title"] = title or node.title
        if lost:
            meta["reelgraph"] = {"type": node.type, "inputs": lost}
        if meta:
            entry["_meta"] = meta
        self.prompt[cid] = entry
        self.report.exported.setdefault(node.id, []).append(cid)
        return cid

    def val(self, node: Any, name: str) -> Any:
        """A literal input value (the spec's default when unset), or the upstream ref/value."""
        link = self.incoming.get(node.id, {}).get(name)
        if link is not None:
            return self.out.get((link.from_node, link.from_output), _MISSING)
        if name in node.inputs:
            return node.inputs[name]
        spec = self.registry.spec(node.type)
        ispec = spec.input(name) if spec else None
        return ispec.default if ispec is not None else None

    def linked(self, node: Any, name: str) -> bool:
        return name in self.incoming.get(node.id, {})

    def ref(self, node: Any, name: str, want: type | None = None) -> Any:
        """The ComfyUI link for input `name` (None when not linked); reported when its source was
        not exported."""
        if not self.linked(node, name):
            return None
        got = self.val(node, name)
        if got is _MISSING:
            link = self.incoming[node.id][name]
            self.report.add("warning", node, f"input {name!r}: its source {link.from_node} was not "
                            "exported; left unlinked (ComfyUI will ask for it)")
            return None
        if isinstance(got, _Latent):
            got = got.ref
        elif isinstance(got, _Video):
            got = got.images
        elif isinstance(got, _Cond):
            got = got.pos
        return got

    def lit(self, node: Any, name: str) -> Any:
        """A widget value: a literal, or a Ref when a primitive node feeds it."""
        if self.linked(node, name):
            return self.ref(node, name)
        return self.val(node, name)

    def lost(self, node: Any, names: tuple[str, ...]) -> dict[str, Any]:
        """Values of `names` that differ from their defaults: ComfyUI has no place for them."""
        spec = self.registry.spec(node.type)
        found = {}
        for name in names:
            ispec = spec.input(name) if spec else None
            if name in node.inputs and not self.linked(node, name) and (
                    ispec is None or node.inputs[name] != ispec.default):
                found[name] = node.inputs[name]
        if found:
            self.report.add("warning", node, "not expressible in ComfyUI: "
                            + ", ".join(f"{k}={v!r}" for k, v in found.items())
                            + " (kept in _meta.reelgraph)")
        return found

    def _bypass(self, node: Any) -> None:
        """A bypassed node passes each output's matching input on, as in the studio."""
        spec = self.registry.spec(node.type)
        if spec is None:
            self.report.add("unmapped", node, "bypassed node of an unknown type; left out")
            return
        for o in spec.outputs:
            src = next((i.name for i in spec.inputs if i.type == o.type and self.linked(node, i.name)), None)
            if src is not None:
                self.out[(node.id, o.name)] = self.val(node, src)
        self.report.add("info", node, "bypassed: its inputs pass straight on")

    # ---- loaders -------------------------------------------------------------------------------
    def _x_LoadDiT(self, node: Any) -> None:  # noqa: N802
        name, dtype = self.lit(node, "model"), self.val(node, "dtype")
        if isinstance(name, str) and name.lower().endswith(".gguf"):
            cid = self._add(node, "UnetLoaderGGUF", {"unet_name": name},
                            lost=self.lost(node, ("dtype",)))
            self.report.add("info", node, "a .gguf DiT needs ComfyUI-GGUF's UnetLoaderGGUF (custom node)")
        else:
            weight = {"auto": "default", "fp8": "fp8_e4m3fn"}.get(dtype)
            cid = self._add(node, "UNETLoader", {"unet_name": name, "weight_dtype": weight or "default"},
                            lost=self.lost(node, ("dtype",)) if weight is None else None)
        self.out[(node.id, "model")] = [cid, 0]

    def _x_LoadTextEncoder(self, node: Any) -> None:  # noqa: N802
        cid = self._add(node, "CLIPLoader", {"clip_name": self.lit(node, "model"), "type": "wan",
                                             "device": "default"},
                        lost=self.lost(node, ("dtype", "max_length", "offload")))
        self.out[(node.id, "encoder")] = [cid, 0]

    def _x_LoadVAE(self, node: Any) -> None:  # noqa: N802
        cid = self._add(node, "VAELoader", {"vae_name": self.lit(node, "vae")},
                        lost=self.lost(node, ("dtype",)))
        self.out[(node.id, "vae")] = [cid, 0]

    def _x_LoadCLIPVision(self, node: Any) -> None:  # noqa: N802
        cid = self._add(node, "CLIPVisionLoader", {"clip_name": self.lit(node, "clip_name")},
                        lost=self.lost(node, ("dtype",)))
        self.out[(node.id, "clip_vision")] = [cid, 0]

    def _x_CLIPVisionEncode(self, node: Any) -> None:  # noqa: N802
        cid = self._add(node, "CLIPVisionEncode", {"clip_vision": self.ref(node, "clip_vision"),
                                                   "image": self.ref(node, "image"),
                                                   "crop": self.lit(node, "crop")})
        self.out[(node.id, "clip_vision_output")] = [cid, 0]

    def _x_LoadLoRA(self, node: Any) -> None:  # noqa: N802
        cid = self._add(node, "LoraLoaderModelOnly", {"model": self.ref(node, "model"),
                                                      "lora_name": self.lit(node, "lora"),
                                                      "strength_model": self.lit(node, "strength")})
        self.out[(node.id, "model")] = [cid, 0]

    # ---- text, latents, conditioning -----------------------------------------------------------
    def _x_TextEncode(self, node: Any) -> None:  # noqa: N802
        clip = self.ref(node, "encoder")
        pos = self._add(node, "CLIPTextEncode", {"text": self._text(node, "prompt"), "clip": clip},
                        title=f"{node.title or 'TextEncode'} (positive)" if node.title else None)
        neg = self._add(node, "CLIPTextEncode", {"text": self._text(node, "negative_prompt"), "clip": clip},
                        title=f"{node.title} (negative)" if node.title else None)
        self.out[(node.id, "conditioning")] = _Cond([pos, 0], [neg, 0])

    def _text(self, node: Any, name: str) -> Any:
        value = self.lit(node, name)
        return "" if value is None else value

    def _x_NoiseInit(self, node: Any) -> None:  # noqa: N802
        cid = self._add(node, "EmptyHunyuanLatentVideo", {
            "width": self.lit(node, "width"), "height": self.lit(node, "height"),
            "length": self.lit(node, "frames"), "batch_size": self.lit(node, "batch")})
        self.out[(node.id, "latent")] = _Latent([cid, 0], self.lit(node, "seed"), self.lit(node, "fps"), node)

    def _x_ImageToVideo(self, node: Any) -> None:  # noqa: N802
        cid = self._add(node, "Wan22ImageToVideoLatent", {
            "vae": self.ref(node, "vae"), "start_image": self.ref(node, "image"),
            "width": self.lit(node, "width"), "height": self.lit(node, "height"),
            "length": self.lit(node, "frames"), "batch_size": 1})
        self.out[(node.id, "latent")] = _Latent([cid, 0], self.lit(node, "seed"), self.lit(node, "fps"), node)

    def _x_WanImageToVideo(self, node: Any) -> None:  # noqa: N802
        cond = self.val(node, "conditioning") if self.linked(node, "conditioning") else None
        if not isinstance(cond, _Cond):
            self.report.add("warning", node, "conditioning is not a TextEncode's: positive and "
                            "negative left unlinked")
            cond = _Cond(None, None)  # type: ignore[arg-type]
        flf = self.linked(node, "end_image") or self.linked(node, "clip_vision_end")
        common = {"positive": cond.pos, "negative": cond.neg, "vae": self.ref(node, "vae"),
                  "start_image": self.ref(node, "start_image"),
                  "width": self.lit(node, "width"), "height": self.lit(node, "height"),
                  "length": self.lit(node, "frames"), "batch_size": self.lit(node, "batch")}
        if flf:
            cid = self._add(node, "WanFirstLastFrameToVideo", {
                **common, "end_image": self.ref(node, "end_image"),
                "clip_vision_start_image": self.ref(node, "clip_vision_start"),
                "clip_vision_end_image": self.ref(node, "clip_vision_end")})
        else:
            cid = self._add(node, "WanImageToVideo", {
                **common, "clip_vision_output": self.ref(node, "clip_vision_start")})
        self.out[(node.id, "conditioning")] = _Cond([cid, 0], [cid, 1])
        self.out[(node.id, "latent")] = _Latent([cid, 2], self.lit(node, "seed"), self.lit(node, "fps"), node)

    # ---- sampling ------------------------------------------------------------------------------
    def _x_DiTDenoise(self, node: Any) -> None:  # noqa: N802
        if self.linked(node, "model_low_noise"):
            self.report.add("unmapped", node, "one DiTDenoise with model_low_noise switches experts "
                            "at a timestep boundary; ComfyUI splits by step: use two DiTDenoise "
                            "with start_step/end_step (as workflows/text_to_video_two_experts)")
            return
        model = self.ref(node, "model")
        shift = self.lit(node, "shift")
        key = ("shift", tuple(model) if model else None, repr(shift))
        if key not in self.shared:
            ms = self._add(node, "ModelSamplingSD3", {"model": model, "shift": shift})
            self.shared[key] = [ms, 0]
        cond = self.val(node, "conditioning") if self.linked(node, "conditioning") else None
        if not isinstance(cond, _Cond):
            self.report.add("warning", node, "conditioning not exported (not from a TextEncode or "
                            "WanImageToVideo); positive/negative left unlinked")
            cond = _Cond(None, None)  # type: ignore[arg-type]
        latent = self.val(node, "latent") if self.linked(node, "latent") else None
        lat_ref = latent.ref if isinstance(latent, _Latent) else self.ref(node, "latent")
        lost_names = ["sampler", "scheduler"]
        seed = self.lit(node, "seed")
        add_noise = self.lit(node, "add_noise")
        if isinstance(latent, _Latent) and latent.seed is not None and add_noise is not False:
            if latent.seed != seed:  # ComfyUI draws the start noise from the sampler's seed
                lost_names.append("seed")
            seed = latent.seed
        sampler = self.lit(node, "sampler")
        scheduler = self.lit(node, "scheduler")
        common = {"model": self.shared[key], "positive": cond.pos, "negative": cond.neg,
                  "latent_image": lat_ref, "steps": self.lit(node, "steps"), "cfg": self.lit(node, "cfg"),
                  "sampler_name": SAMPLERS_OUT.get(sampler, sampler) if isinstance(sampler, str) else sampler,
                  "scheduler": SCHEDULERS_OUT.get(scheduler, scheduler) if isinstance(scheduler, str) else scheduler}
        start, end = self.lit(node, "start_step"), self.lit(node, "end_step")
        leftover = self.lit(node, "return_with_leftover_noise")
        advanced = (start not in (0, None) or end not in (10000, -1, None) or add_noise is False
                    or leftover is True)
        lost = {}
        if advanced:
            if self.lit(node, "denoise") not in (1, 1.0):
                lost_names.append("denoise")
            lost = self._lost_sampler(node, lost_names, sampler, scheduler)
            cid = self._add(node, "KSamplerAdvanced", {
                **common, "noise_seed": seed, "add_noise": "disable" if add_noise is False else "enable",
                "start_at_step": start, "end_at_step": 10000 if end in (-1, None) else end,
                "return_with_leftover_noise": "enable" if leftover else "disable"}, lost=lost)
        else:
            lost = self._lost_sampler(node, lost_names, sampler, scheduler)
            cid = self._add(node, "KSampler", {**common, "seed": seed,
                                               "denoise": self.lit(node, "denoise")}, lost=lost)
        fps = latent.fps if isinstance(latent, _Latent) else None
        self.out[(node.id, "latent")] = _Latent([cid, 0], None, fps, latent.start if isinstance(latent, _Latent) else None)

    def _lost_sampler(self, node: Any, names: list[str], sampler: Any, scheduler: Any) -> dict[str, Any]:
        keep = [n for n in names if (n == "sampler" and sampler in SAMPLERS_OUT)
                or (n == "scheduler" and scheduler in SCHEDULERS_OUT) or n in ("seed", "denoise")]
        lost = {n: self.val(node, n) for n in keep}
        if lost:
            self.report.add("warning", node, "not expressible in ComfyUI: "
                            + ", ".join(f"{k}={v!r}" for k, v in lost.items())
                            + " (kept in _meta.reelgraph; ComfyUI uses "
                            + ", ".join(_comfy_value(k, v) for k, v in lost.items()) + ")")
        return lost

    # ---- VAE, video, images ----------------------------------------------------------------------
    def _x_VAEDecode(self, node: Any) -> None:  # noqa: N802
        latent = self.val(node, "latent") if self.linked(node, "latent") else None
        ins = {"samples": self.ref(node, "latent"), "vae": self.ref(node, "vae")}
        tile = self.lit(node, "tile_size")
        if tile not in (0, None):
            cid = self._add(node, "VAEDecodeTiled", {**ins, "tile_size": tile,
                                                     "overlap": self.lit(node, "tile_overlap"),
                                                     "temporal_size": 64, "temporal_overlap": 8})
        else:
            cid = self._add(node, "VAEDecode", ins, lost=self.lost(node, ("tile_overlap",)))
        self.out[(node.id, "video")] = _Video([cid, 0], latent.fps if isinstance(latent, _Latent) else None)

    def _x_VAEEncode(self, node: Any) -> None:  # noqa: N802
        video = self.val(node, "video") if self.linked(node, "video") else None
        cid = self._add(node, "VAEEncode", {"pixels": self.ref(node, "video"), "vae": self.ref(node, "vae")},
                        lost=self.lost(node, ("tile_size", "tile_overlap")))
        self.out[(node.id, "latent")] = _Latent([cid, 0], None, video.fps if isinstance(video, _Video) else None)

    def _x_LoadVideo(self, node: Any) -> None:  # noqa: N802
        cid = self._add(node, "LoadVideo", {"file": self.lit(node, "video")},
                        lost=self.lost(node, ("start_frame", "frame_count", "stride", "max_frames",
                                              "memory_cap_mb")))
        parts = self._add(node, "GetVideoComponents", {"video": [cid, 0]})
        self.out[(node.id, "video")] = _Video([parts, 0], [parts, 2])

    def _x_LoadImage(self, node: Any) -> None:  # noqa: N802
        cid = self._add(node, "LoadImage", {"image": self.lit(node, "image")})
        self.out[(node.id, "image")] = [cid, 0]

    def _x_SaveVideo(self, node: Any) -> None:  # noqa: N802
        video = self.val(node, "video") if self.linked(node, "video") else None
        images = self.ref(node, "video")
        fps = video.fps if isinstance(video, _Video) and video.fps is not None else 16.0
        fmt = self.lit(node, "format")
        prefix = self.lit(node, "filename_prefix")
        if fmt == "webm":
            self._add(node, "SaveWEBM", {"images": images, "filename_prefix": prefix, "codec": "vp9",
                                         "fps": fps, "crf": self.lit(node, "crf")})
        elif fmt in ("webp", "gif"):
            self._add(node, "SaveAnimatedWEBP", {"images": images, "filename_prefix": prefix, "fps": fps,
                                                 "lossless": False, "quality": 80, "method": "default"},
                      lost=self.lost(node, ("format",)) if fmt == "gif" else None)
        else:
            key = ("video", tuple(images) if images else None, repr(fps))
            if key not in self.shared:
                self.shared[key] = [self._add(node, "CreateVideo", {"images": images, "fps": fps}), 0]
            self._add(node, "SaveVideo", {"video": self.shared[key], "filename_prefix": prefix,
                                          "format": "mp4", "codec": "auto"},
                      lost=self.lost(node, ("crf",)))

    def _x_SaveImage(self, node: Any) -> None:  # noqa: N802
        self._add(node, "SaveImage", {"images": self.ref(node, "images"),
                                      "filename_prefix": self.lit(node, "filename_prefix")})

    def _x_Preview(self, node: Any) -> None:  # noqa: N802
        self._add(node, "PreviewImage", {"images": self.ref(node, "value")})

    def _primitive(self, node: Any, class_type: str, name: str, out: str) -> None:
        cid = self._add(node, class_type, {"value": self.lit(node, name)})
        self.out[(node.id, out)] = [cid, 0]

    def _x_Int(self, node: Any) -> None:  # noqa: N802
        self._primitive(node, "PrimitiveInt", "value", "value")

    def _x_Float(self, node: Any) -> None:  # noqa: N802
        self._primitive(node, "PrimitiveFloat", "value", "value")

    def _x_Text(self, node: Any) -> None:  # noqa: N802
        self._primitive(node, "PrimitiveStringMultiline", "text", "text")

    def _x_placeholder(self, node: Any) -> None:
        """An imported placeholder goes back as its original ComfyUI node."""
        comfy = node.extra["comfy"]
        ctype = comfy.get("type")
        if not isinstance(ctype, str) or not ctype:
            self.report.add("unmapped", node, "placeholder without its ComfyUI type; left out")
            return
        inputs = {k: v for k, v in node.inputs.items() if not isinstance(v, (dict,))}
        for name in self.incoming.get(node.id, {}):
            inputs[name] = self.ref(node, name)
        cid = self._add(node, ctype, inputs)
        names = list(OUTPUTS.get(ctype, ()))
        for link in self.wf.links_from(node.id):
            m = re.fullmatch(r"output_(\d+)", link.from_output)
            slot = int(m.group(1)) if m else (names.index(link.from_output) if link.from_output in names else 0)
            self.out[(node.id, link.from_output)] = [cid, slot]
        self.report.add("info", node, f"exported as its original ComfyUI node {ctype}")


class _Missing:
    def __repr__(self) -> str:
        return "<not exported>"


_MISSING = _Missing()


def _comfy_value(name: str, value: Any) -> str:
    if name == "sampler":
        return f"sampler_name {SAMPLERS_OUT.get(value, value)!r}"
    if name == "scheduler":
        return f"scheduler {SCHEDULERS_OUT.get(value, value)!r}"
    if name == "seed":
        return "the noise seed for both"
    return f"no {name}"
