"""End to end through the real nodes and the executor, on tiny random models that the test builds
and saves into a temporary model folder: text -> mp4, image -> mp4, and extending a video. The mp4 is
read back with PyAV and must have the right frame count, size and fps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import pytest
import torch

from engine.cache import ResultCache
from engine.document import Workflow
from engine.executor import Executor
from engine.media import read_embedded, write_png, write_video
from engine.models.paths import ModelPaths
from engine.models.safe_load import save_state_dict
from engine.models.text_encoders import builtin_text_encoders
from engine.models.wan_dit import diffusers_to_original
from engine.values import Video

WIDTH, HEIGHT, FRAMES, FPS = 48, 32, 9, 8.0


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    """A ComfyUI-style models folder with a tiny random BERT encoder, Wan DiT and Wan VAE."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    encoder_dir = root / "text_encoders" / "tiny-bert"
    encoder_dir.mkdir(parents=True)
    minilm = next(iter(builtin_text_encoders().values()))
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm / name, encoder_dir / name)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, vocab_size=30522)).save_pretrained(encoder_dir)

    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 2], num_res_blocks=1,
                           temperal_downsample=[True, True])
    save_state_dict(vae.state_dict(), root / "vae" / "tiny_vae.safetensors")
    dit = WanTransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=16,
                                out_channels=16, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=1)
    # 16-wide heads are not Wan's 128, so the head count travels in the file's metadata
    save_state_dict(diffusers_to_original(dit.state_dict()), root / "diffusion_models" / "tiny_dit.safetensors",
                    metadata={"config": json.dumps({"num_attention_heads": 2})})
    return root


@pytest.fixture
def pipeline_executor(model_root, registry, tmp_path) -> Executor:
    return Executor(registry, ResultCache(disk_dir=None), model_paths=ModelPaths([model_root]),
                    settings={"input_dir": str(tmp_path)}, temp_dir=tmp_path / "tmp")


def base_graph() -> Workflow:
    wf = Workflow()
    wf.add_node("LoadTextEncoder", {"model": "tiny-bert"}, node_id="encoder")
    wf.add_node("TextEncode", {"prompt": "a red circle moving right", "negative_prompt": "blurry"},
                node_id="text")
    wf.add_node("LoadDiT", {"model": "tiny_dit.safetensors"}, node_id="dit")
    wf.add_node("LoadVAE", {"vae": "tiny_vae.safetensors"}, node_id="vae")
    wf.add_node("DiTDenoise", {"steps": 2, "cfg": 2.0, "shift": 3.0, "sampler": "euler", "seed": 1},
                node_id="denoise")
    wf.add_node("VAEDecode", {}, node_id="decode")
    wf.add_node("SaveVideo", {"filename_prefix": "clip", "format": "mp4"}, node_id="save")
    wf.connect("encoder", "encoder", "text", "encoder")
    wf.connect("dit", "model", "denoise", "model")
    wf.connect("text", "conditioning", "denoise", "conditioning")
    wf.connect("vae", "vae", "decode", "vae")
    wf.connect("denoise", "latent", "decode", "latent")
    wf.connect("decode", "video", "save", "video")
    return wf


def read_back(path: str) -> tuple[int, int, int, float]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.codec_context.width, stream.codec_context.height, float(stream.average_rate)


def only_video(report) -> str:
    videos = [p for p in report.outputs if p.endswith(".mp4")]
    assert len(videos) == 1, report.outputs
    return videos[0]


def test_text_to_video_writes_a_real_mp4(pipeline_executor, tmp_path):
    wf = base_graph()
    wf.add_node("NoiseInit", {"width": WIDTH, "height": HEIGHT, "frames": FRAMES, "seed": 3, "fps": FPS},
                node_id="noise")
    wf.connect("vae", "vae", "noise", "vae")
    wf.connect("noise", "latent", "denoise", "latent")
    report = pipeline_executor.run(wf, output_dir=tmp_path / "out")
    assert report.status == "done", report.error
    path = only_video(report)
    assert read_back(path) == (FRAMES, WIDTH, HEIGHT, FPS)
    embedded = read_embedded(path)
    assert embedded.workflow["nodes"]["noise"]["inputs"]["seed"] == 3
    models = embedded.provenance["models"]
    assert {models["dit"]["family"], models["vae"]["family"]} == {"wan2.1-t2v", "wan-vae-2.1"}
    assert all(len(models[n]["sha256"]) == 64 for n in ("dit", "vae", "encoder"))


def test_image_to_video_writes_a_real_mp4(pipeline_executor, tmp_path):
    image = torch.zeros(HEIGHT, WIDTH, 3)
    image[8:20, 10:22] = torch.tensor([1.0, 0.0, 0.0])
    write_png(tmp_path / "start.png", image)
    wf = base_graph()
    wf.add_node("LoadImage", {"image": "start.png"}, node_id="image")
    wf.add_node("ImageToVideo", {"width": WIDTH, "height": HEIGHT, "frames": FRAMES, "seed": 3, "fps": FPS},
                node_id="i2v")
    wf.connect("image", "image", "i2v", "image")
    wf.connect("vae", "vae", "i2v", "vae")
    wf.connect("i2v", "latent", "denoise", "latent")
    report = pipeline_executor.run(wf, output_dir=tmp_path / "out")
    assert report.status == "done", report.error
    assert read_back(only_video(report)) == (FRAMES, WIDTH, HEIGHT, FPS)


def test_extending_a_video_writes_the_clip_plus_new_frames(pipeline_executor, tmp_path):
    g = torch.Generator().manual_seed(5)
    clip = Video(torch.rand(9, HEIGHT, WIDTH, 3, generator=g), fps=FPS)
    write_video(tmp_path / "clip.mp4", clip)
    wf = base_graph()
    wf.add_node("LoadVideo", {"video": "clip.mp4"}, node_id="clip")
    wf.add_node("VideoCondition", {"mode": "extend forward", "keep_frames": 5, "generate_frames": 8,
                                   "seed": 3}, node_id="condition")
    wf.add_node("StitchVideo", {"mode": "extend forward", "keep_frames": 5}, node_id="stitch")
    wf.connect("clip", "video", "condition", "video")
    wf.connect("vae", "vae", "condition", "vae")
    wf.connect("condition", "latent", "denoise", "latent")
    wf.connect("decode", "video", "stitch", "generated")
    wf.connect("clip", "video", "stitch", "video")
    wf.connect("stitch", "video", "save", "video")
    report = pipeline_executor.run(wf, output_dir=tmp_path / "out")
    assert report.status == "done", report.error
    frames, width, height, fps = read_back(only_video(report))
    assert (width, height, fps) == (WIDTH, HEIGHT, FPS)
    assert frames == 9 + 8  # the whole original clip, then the generated continuation


def test_bad_frame_count_names_the_node_and_the_fix(pipeline_executor, tmp_path):
    wf = base_graph()
    wf.add_node("NoiseInit", {"width": WIDTH, "height": HEIGHT, "frames": 10, "seed": 3}, node_id="noise")
    wf.connect("vae", "vae", "noise", "vae")
    wf.connect("noise", "latent", "denoise", "latent")
    report = pipeline_executor.run(wf, output_dir=tmp_path / "out")
    assert report.status == "failed"
    assert report.error.node_id == "noise"
    assert "4n+1" in report.error.message and "9" in report.error.message


def test_missing_model_file_names_the_node_and_where_it_looked(pipeline_executor, tmp_path):
    wf = base_graph()
    wf.nodes["dit"].inputs["model"] = "not_there.safetensors"
    report = pipeline_executor.run(wf, targets=["dit"], output_dir=tmp_path / "out")
    assert report.status == "failed" and report.error.node_id == "dit"
    assert "not_there.safetensors" in report.error.message
