"""LoRAs on Wan DiTs (engine.models.lora, nodes/lora.py): every key layout against a hand-merged
reference and against diffusers' own LoRA loading + fuse, strength semantics, a base model that
never changes, stacks, refusals of wrong files, and the node inside the executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.models.lora import LoraDiT, apply_loras, load_lora
from engine.models.safe_load import ModelLoadError
from engine.models.wan_dit import WanDiT, load_dit
from tests.tiny_lora import FORMATS, in_format, lora_state, merged_state, write_lightx2v, write_lora
from tests.tiny_models import tiny_dit, write_dit

LAYOUTS = {"comfyui": "comfyui", "original_ab": "original", "kohya": "kohya", "peft": "diffusers",
           "diffusers_prefixed": "diffusers"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lora")


@pytest.fixture(scope="module")
def base(folder) -> WanDiT:
    return load_dit(write_dit(folder / "wan_t2v.safetensors", "t2v"), device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(3)
    return (torch.randn(1, 16, 2, 4, 4, generator=g), torch.tensor([700.0]),
            torch.randn(1, 6, 32, generator=g))


def velocity(model, inputs) -> torch.Tensor:
    return model.predict_velocity(*inputs)


def reference(folder: Path, name: str, loras: list[tuple[dict, float]]) -> WanDiT:
    """The tiny base with `loras` (original-name state dicts, strength) merged by hand."""
    state = tiny_dit("t2v").state_dict()
    for lora, strength in loras:
        state = merged_state(state, lora, strength)
    model = tiny_dit("t2v")
    model.load_state_dict(state)
    return load_dit(write_dit(folder / f"{name}.safetensors", model=model), device="cpu", dtype="fp32")


def format_state(fmt: str, seed: int = 1) -> dict:
    # kohya and diffusers-named files carry pairs only; PEFT carries diff_b as lora_B.bias
    return lora_state(seed=seed, extras=fmt in ("comfyui", "original_ab"),
                      diff_b=fmt in ("comfyui", "original_ab", "peft"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_key_layout_equals_the_hand_merged_model(fmt, folder, base, inputs):
    state = format_state(fmt)
    path = write_lora(folder / f"{fmt}.safetensors", in_format(state, fmt))
    lora = load_lora(path, base)
    assert lora.info.layout == LAYOUTS[fmt] and lora.info.sha256
    got = velocity(apply_loras(base, [(lora, 0.7)]), inputs)
    want = velocity(reference(folder, f"ref_{fmt}", [(state, 0.7)]), inputs)
    assert (got - velocity(base, inputs)).abs().max() > 1e-2  # the LoRA does something
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_lightx2v_layout_changes_norms_modulation_and_biases(folder, base):
    """Every .diff/.diff_b of a distillation LoRA lands on a tensor (none dropped, as diffusers does)."""
    lora = load_lora(write_lightx2v(folder / "lightx2v.safetensors"), base)
    assert {"blocks.0.norm2.weight", "blocks.0.norm2.bias", "blocks.0.attn1.norm_q.weight",
            "blocks.1.attn2.norm_k.weight", "blocks.1.scale_shift_table", "scale_shift_table",
            "patch_embedding.weight", "patch_embedding.bias"} <= set(lora.params)
    assert lora.linear["proj_out"].diff_b is not None and lora.linear["blocks.0.ffn.net.2"].pairs


@pytest.mark.parametrize("fmt", ["comfyui", "kohya", "peft"])
def test_equals_diffusers_lora_loading_and_fuse(fmt, folder, base, inputs):
    from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

    state = lora_state(seed=2, extras=False, diff_b=fmt != "kohya")  # what diffusers can read
    file_state = in_format(state, fmt)
    path = write_lora(folder / f"diffusers_{fmt}.safetensors", file_state)
    converted = WanLoraLoaderMixin.lora_state_dict({k: v.clone() for k, v in file_state.items()})
    transformer = tiny_dit("t2v")
    transformer.load_lora_adapter(converted, prefix="transformer", adapter_name="test")
    transformer.fuse_lora(lora_scale=1.3)
    fused = WanDiT(transformer, base.info, "t2v", torch.device("cpu"), base.policy)
    got = velocity(apply_loras(base, [(load_lora(path, base), 1.3)]), inputs)
    torch.testing.assert_close(got, velocity(fused, inputs), rtol=1e-5, atol=1e-5)


def test_strength_zero_is_the_base_exactly_and_strength_matters(folder, base, inputs):
    lora = load_lora(write_lightx2v(folder / "s.safetensors"), base)
    plain = velocity(base, inputs)
    assert torch.equal(velocity(apply_loras(base, [(lora, 0.0)]), inputs), plain)
    half, full = (velocity(apply_loras(base, [(lora, s)]), inputs) for s in (0.5, 1.0))
    assert not torch.allclose(half, full) and not torch.allclose(half, plain)


def test_the_base_model_is_bit_identical_afterwards_even_after_an_error(folder, base, inputs):
    lora = load_lora(write_lightx2v(folder / "leak.safetensors"), base)
    before = {k: v.clone() for k, v in base.module.state_dict().items()}
    plain = velocity(base, inputs)
    model = apply_loras(base, [(lora, 1.0)])
    with model.loaded():  # as the sampler does: loaded() around many calls
        velocity(model, inputs)
        assert torch.equal(velocity(base, inputs), plain)  # clean between calls, even inside
        velocity(model, inputs)

    def boom(*_):
        raise RuntimeError("failure inside the forward pass")

    handle = base.module.blocks[1].register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="inside the forward"):
            velocity(model, inputs)
    finally:
        handle.remove()
    assert torch.equal(velocity(base, inputs), plain)
    after = base.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not m._forward_hooks for m in base.module.modules())


def test_nested_loaded_gives_the_same_result(folder, base, inputs):
    model = apply_loras(base, [(load_lora(write_lightx2v(folder / "n.safetensors"), base), 0.8)])
    outside = velocity(model, inputs)
    with model.loaded(), model.loaded():
        inside = velocity(model, inputs)
    assert torch.equal(inside, outside) and model._staged is None


def test_a_chain_is_one_flat_stack_equal_to_both_merged(folder, base, inputs):
    first, second = lora_state(seed=5), lora_state(seed=6, rank=2, alpha=None)
    a = load_lora(write_lora(folder / "a.safetensors", in_format(first, "comfyui")), base)
    b = load_lora(write_lora(folder / "b.safetensors", in_format(second, "original_ab")), base)
    chained = apply_loras(apply_loras(base, [(a, 0.6)]), [(b, -0.9)])
    assert isinstance(chained, LoraDiT) and chained.base is base and len(chained.loras) == 2
    want = velocity(reference(folder, "ref_chain", [(first, 0.6), (second, -0.9)]), inputs)
    torch.testing.assert_close(velocity(chained, inputs), want, rtol=1e-5, atol=1e-5)
    # forwards what the sampler and nodes read
    assert (chained.in_channels, chained.text_dim, chained.frame_timesteps, chained.variant) == \
        (base.in_channels, base.text_dim, base.frame_timesteps, base.variant)
    assert chained.info is base.info and chained.nbytes == a.nbytes + b.nbytes


def test_a_lora_for_a_bigger_model_is_refused(folder, base):
    path = write_lora(folder / "wan14b_lora.safetensors",
                      in_format(lora_state(extras=False, num_layers=4), "comfyui"))
    with pytest.raises(ModelLoadError, match="bigger model") as err:
        load_lora(path, base)
    assert err.value.input == "lora" and "wan14b_lora.safetensors" in str(err.value)

    state = in_format(lora_state(extras=False), "comfyui")  # 14B width: 5120 instead of 64
    state["diffusion_model.blocks.0.self_attn.q.lora_down.weight"] = torch.zeros(4, 128)
    path = write_lora(folder / "wide_lora.safetensors", state)
    with pytest.raises(ModelLoadError, match=r"another model size.*pick a LoRA made for") as err:
        load_lora(path, base)
    assert "blocks.0.self_attn.q.lora_down.weight" in str(err.value) and "wide_lora" in str(err.value)


def test_unknown_keys_are_named(folder, base):
    state = in_format(lora_state(extras=False), "comfyui")
    state["diffusion_model.blocks.0.audio_attn.q.lora_down.weight"] = torch.zeros(4, 64)
    state["diffusion_model.blocks.0.self_attn.q.lora_mid.weight"] = torch.zeros(4, 4)
    path = write_lora(folder / "other_arch.safetensors", state)
    with pytest.raises(ModelLoadError) as err:
        load_lora(path, base)
    message = str(err.value)
    assert "2 of its keys match nothing" in message and "other_arch.safetensors" in message
    assert "audio_attn.q.lora_down.weight" in message and "lora_mid.weight" in message
    assert "not supported" in message


def test_a_dit_checkpoint_is_not_a_lora(folder, base):
    path = write_dit(folder / "not_a_lora.safetensors", "t2v")
    with pytest.raises(ModelLoadError, match="not a LoRA.*LoadDiT") as err:
        load_lora(path, base)
    assert "not_a_lora.safetensors" in str(err.value) and err.value.input == "lora"


def test_missing_half_of_a_pair_is_refused(folder, base):
    state = in_format(lora_state(extras=False), "comfyui")
    del state["diffusion_model.blocks.1.ffn.2.lora_up.weight"]
    with pytest.raises(ModelLoadError, match="ffn.2.lora_down.weight has no matching up"):
        load_lora(write_lora(folder / "half.safetensors", state), base)


def test_text_encoder_keys_are_reported_not_applied(folder, base, inputs):
    state = in_format(lora_state(extras=False, diff_b=False), "kohya")
    state["lora_te_encoder_block_0_layer_0_SelfAttention_q.lora_down.weight"] = torch.zeros(4, 32)
    lora = load_lora(write_lora(folder / "with_te.safetensors", state), base)
    assert lora.skipped == ["lora_te_encoder_block_0_layer_0_SelfAttention_q.lora_down.weight"]


# ---- the node in the executor ------------------------------------------------------------------

WORKFLOW = Path(__file__).resolve().parents[1] / "workflows" / "text_to_video_lora_4step.json"


def statuses(report) -> dict[str, str]:
    return {nid: rec.status.value for nid, rec in report.nodes.items()}


def test_load_lora_node_runs_and_strength_reruns_only_it_and_downstream(executor, tmp_path):
    import av

    from engine.document import load_workflow
    from engine.media.embed import read_embedded
    from engine.models.paths import ModelPaths
    from tests.test_workflows import workflow_model_writers

    root = tmp_path / "models"
    for key, writer in workflow_model_writers().items():
        if key.startswith(("text_encoders/umt5", "vae/wan_2.1", "diffusion_models/wan2.1_t2v",
                           "loras/wan2.1_t2v_lightx2v")):
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            writer(root / key)
    executor.model_paths = ModelPaths([root])
    workflow = load_workflow(WORKFLOW)
    first = executor.run(workflow, output_dir=tmp_path / "out")
    assert first.status == "done", first.error
    video = next(p for p in first.outputs if p.endswith(".mp4"))
    with av.open(video) as container:
        assert sum(1 for _ in container.decode(video=0)) == workflow.nodes["noise"].inputs["frames"]
    models = read_embedded(video).provenance["models"]
    lora_file = root / "loras" / workflow.nodes["lora"].inputs["lora"]
    from engine.models.safe_load import file_sha256
    assert models["lora"]["path"] == lora_file.name
    assert models["lora"]["sha256"] == file_sha256(lora_file)

    workflow.nodes["lora"].inputs["strength"] = 0.5
    second = executor.run(workflow, output_dir=tmp_path / "out")
    assert second.status == "done", second.error
    got = statuses(second)
    assert got["dit"] == "cached" and got["encode"] == "cached" and got["noise"] == "cached"
    assert {got[n] for n in ("lora", "denoise", "decode", "save")} == {"executed"}


def test_load_lora_node_error_names_the_input_and_file(executor, tmp_path):
    from engine.document import load_workflow
    from engine.models.paths import ModelPaths
    from tests.tiny_models import WORKFLOW_MODELS

    root = tmp_path / "models"
    for key, writer in WORKFLOW_MODELS.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        writer(root / key)
    wrong = root / "loras" / "wan2.1_t2v_lightx2v_4steps_lora_rank32.safetensors"
    write_dit(wrong, "t2v")  # a DiT where a LoRA should be
    executor.model_paths = ModelPaths([root])
    report = executor.run(load_workflow(WORKFLOW), output_dir=tmp_path / "out")
    assert report.status == "failed"
    reason = report.nodes["lora"].reason
    assert reason.startswith("input 'lora'") and wrong.name in reason and "not a LoRA" in reason
    assert json.dumps(statuses(report))  # the report stays serialisable


def test_a_lora_under_block_swap_samples_exactly_as_without(folder, base):
    """Block swap (engine.memory) streams blocks from the CPU; the LoRA's hooks and its in-place
    norm/modulation diffs must land on the streamed blocks too (here onload and offload are both
    the CPU, so the same code runs as on a GPU)."""
    from engine.memory import settings_scope
    from engine.sampling import sample
    from engine.values import Conditioning, Latent

    lora = apply_loras(base, [(load_lora(write_lightx2v(folder / "swap.safetensors"), base), 0.8)])
    g = torch.Generator().manual_seed(5)
    latent = Latent(torch.randn(1, 16, 2, 4, 4, generator=g), meta={"sigma": 1.0})
    cond = Conditioning(torch.randn(1, 6, 32, generator=g), torch.ones(1, 6, dtype=torch.long),
                        torch.zeros(1, 6, 32), torch.ones(1, 6, dtype=torch.long))
    plain = sample(lora, latent, cond, steps=2, cfg=3.0, shift=3.0, batch_cfg=False).samples
    with settings_scope({"block_swap_blocks": 1}):
        swapped = sample(lora, latent, cond, steps=2, cfg=3.0, shift=3.0, batch_cfg=False).samples
    assert base.memory_plan.swapped_blocks == 1
    assert torch.equal(swapped, plain)
    assert not torch.equal(plain, sample(base, latent, cond, steps=2, cfg=3.0, shift=3.0).samples)
