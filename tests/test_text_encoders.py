"""Text encoder loading: every supported layout of a tiny random UMT5/T5 gives the reference
transformers model's embeddings, and the bundled MiniLM gives sensible sentence similarities."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from engine.models.safe_load import ModelLoadError
from engine.models.t5_checkpoint import parse_t5_checkpoint
from engine.models.text_encoders import (BUNDLED_MINILM, builtin_text_encoders, load_text_encoder,
                                         mean_pool, resolve_text_encoder)
from engine.models.paths import ModelPaths

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SENTENCES = ["a red circle moving right on a black background",
             "a blue square moving left on a gray background",
             "the camera pans slowly across a misty forest at dawn",
             "a cat sleeps on a warm windowsill in soft light"]
PROMPTS = ["a red circle moving right", "the  camera pans\nslowly across a cat", ""]
MAX_LEN = 40


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory) -> Path:
    import sentencepiece as spm

    out = tmp_path_factory.mktemp("spm")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 10), model_prefix=str(out / "sp"), vocab_size=48,
        hard_vocab_limit=False, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=1.0, minloglevel=2)
    return out / "sp.model"


def tiny_encoder(kind: str, vocab: int) -> torch.nn.Module:
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(0 if kind == "umt5" else 1)
    common = dict(vocab_size=vocab, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
                  relative_attention_num_buckets=8, dropout_rate=0.0, is_encoder_decoder=False,
                  use_cache=False)
    if kind == "umt5":
        model = UMT5EncoderModel(UMT5Config(**common, feed_forward_proj="gated-gelu"))
    else:
        model = T5EncoderModel(T5Config(**common, feed_forward_proj="relu"))
    with torch.no_grad():  # random init is tiny; make the final norm non-trivial too
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def umt5(spm_model) -> torch.nn.Module:
    import sentencepiece as spm

    return tiny_encoder("umt5", spm.SentencePieceProcessor(model_file=str(spm_model)).get_piece_size())


def plain(sd: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """A state dict safetensors can write: tied tensors become separate copies."""
    return {prefix + k: v.clone().contiguous() for k, v in sd.items()}


def reference(model: torch.nn.Module, enc, texts: list[str]) -> torch.Tensor:
    """The transformers model on our token ids, padded positions zeroed: (B, L, D)."""
    ids, mask = enc.tokenizer([" ".join(t.split()) for t in texts], enc.max_length)
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return hidden * mask.unsqueeze(-1)


def assert_matches(model, enc, texts=PROMPTS) -> None:
    embeds, mask = enc.encode(texts)
    assert embeds.shape == (len(texts), MAX_LEN, 32) and embeds.dtype == torch.float32
    assert mask.shape == (len(texts), MAX_LEN)
    torch.testing.assert_close(embeds, reference(model, enc, texts), atol=1e-5, rtol=1e-5)
    for row in range(len(texts)):
        n = int(mask[row].sum())
        assert n >= 1 and torch.all(mask[row, :n] == 1) and torch.all(mask[row, n:] == 0)
        assert torch.all(embeds[row, n:] == 0)  # Wan zeros the padded context
        assert embeds[row, :n].abs().sum() > 0


def hf_to_wan(sd: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """Wan's original key names (wan/modules/t5.py T5Encoder), written out independently."""
    wan = {"token_embedding.weight": sd["shared.weight"],
           "norm.weight": sd["encoder.final_layer_norm.weight"]}
    for i in range(layers):
        a, f = f"encoder.block.{i}.layer.0.", f"encoder.block.{i}.layer.1."
        wan[f"blocks.{i}.norm1.weight"] = sd[a + "layer_norm.weight"]
        for x in "qkvo":
            wan[f"blocks.{i}.attn.{x}.weight"] = sd[a + f"SelfAttention.{x}.weight"]
        wan[f"blocks.{i}.pos_embedding.embedding.weight"] = \
            sd[a + "SelfAttention.relative_attention_bias.weight"]
        wan[f"blocks.{i}.norm2.weight"] = sd[f + "layer_norm.weight"]
        wan[f"blocks.{i}.ffn.gate.0.weight"] = sd[f + "DenseReluDense.wi_0.weight"]
        wan[f"blocks.{i}.ffn.fc1.weight"] = sd[f + "DenseReluDense.wi_1.weight"]
        wan[f"blocks.{i}.ffn.fc2.weight"] = sd[f + "DenseReluDense.wo.weight"]
    return {k: v.clone() for k, v in wan.items()}


def wan_forward(wan: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor,
                layers: int, heads: int) -> torch.Tensor:
    """Oracle: Wan's UMT5 encoder semantics straight from its keys (RMS norm, unscaled attention
    with a per-block bucketed position bias, fc2(fc1(x) * gelu_tanh(gate(x))))."""
    def norm(x, w):
        return w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    def buckets(n: int, num_buckets: int, max_dist: int = 128) -> torch.Tensor:
        rel = torch.arange(n)[None, :] - torch.arange(n)[:, None]  # key - query
        half = num_buckets // 2
        out = (rel > 0).long() * half
        rel = rel.abs()
        exact = half // 2
        large = exact + (torch.log(rel.float().clamp(min=1) / exact) / math.log(max_dist / exact)
                         * (half - exact)).long()
        return out + torch.where(rel < exact, rel, large.clamp(max=half - 1))

    x = wan["token_embedding.weight"][ids]  # (B, L, D)
    b, n, _ = x.shape
    key_mask = (mask == 0)[:, None, None, :]  # (B, 1, 1, L)
    for i in range(layers):
        p = f"blocks.{i}."
        table = wan[p + "pos_embedding.embedding.weight"]  # (buckets, heads)
        bias = table[buckets(n, table.shape[0])].permute(2, 0, 1)[None]  # (1, H, L, L)
        h = norm(x, wan[p + "norm1.weight"])
        q, k, v = (F.linear(h, wan[p + f"attn.{c}.weight"]).view(b, n, heads, -1) for c in "qkv")
        att = torch.einsum("binc,bjnc->bnij", q, k) + bias
        att = att.masked_fill(key_mask, torch.finfo(att.dtype).min).softmax(-1)
        x = x + F.linear(torch.einsum("bnij,bjnc->binc", att, v).reshape(b, n, -1),
                         wan[p + "attn.o.weight"])
        h = norm(x, wan[p + "norm2.weight"])
        gate = F.gelu(F.linear(h, wan[p + "ffn.gate.0.weight"]), approximate="tanh")
        x = x + F.linear(F.linear(h, wan[p + "ffn.fc1.weight"]) * gate, wan[p + "ffn.fc2.weight"])
    return norm(x, wan["norm.weight"])


# ---- layouts --------------------------------------------------------------------------------

def test_hf_folder_with_spiece_model(tmp_path, umt5, spm_model):
    folder = tmp_path / "umt5-tiny"
    umt5.save_pretrained(folder)
    shutil.copy(spm_model, folder / "spiece.model")
    enc = load_text_encoder(folder, device="cpu", max_length=MAX_LEN)
    assert enc.info.family == "umt5" and enc.info.layout == "hf" and enc.dim == 32
    assert len(enc.info.sha256) == 64
    assert_matches(umt5, enc)
    # the tokenizer is exactly SentencePiece plus the end token
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    ids, mask = enc.tokenizer(["a red circle"], MAX_LEN)
    n = int(mask.sum())
    assert ids[0, :n].tolist() == sp.encode("a red circle") + [1]


def test_hf_folder_with_tokenizer_json_matches_spiece(tmp_path, umt5, spm_model):
    import sentencepiece as spm
    from transformers import T5Tokenizer

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    folder = tmp_path / "umt5-tokjson"
    umt5.save_pretrained(folder)
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(folder)
    assert (folder / "tokenizer.json").is_file() and not (folder / "spiece.model").exists()
    enc = load_text_encoder(folder, device="cpu", max_length=MAX_LEN)
    assert_matches(umt5, enc)
    ids, mask = enc.tokenizer(["a blue square"], MAX_LEN)
    assert ids[0, : int(mask.sum())].tolist() == sp.encode("a blue square") + [1]


def test_single_file_comfyui_keys_with_sibling_tokenizer(tmp_path, umt5, spm_model):
    (tmp_path / "umt5_tiny.tokenizer").mkdir()
    shutil.copy(spm_model, tmp_path / "umt5_tiny.tokenizer" / "spiece.model")
    sd = {k: v for k, v in umt5.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(plain(sd), tmp_path / "umt5_tiny.safetensors")
    enc = load_text_encoder(tmp_path / "umt5_tiny.safetensors", device="cpu", max_length=MAX_LEN)
    assert (enc.info.family, enc.info.layout) == ("umt5", "comfyui")
    assert enc.info.config["num_layers"] == 2 and enc.info.config["num_heads"] == 4
    assert enc.info.config["d_ff"] == 64 and enc.info.config["feed_forward_proj"] == "gated-gelu"
    assert_matches(umt5, enc)


def test_single_file_prefixed_keys_with_embedded_tokenizer(tmp_path, umt5, spm_model):
    prefix = "text_encoders.umt5xxl.transformer."
    sd = plain(umt5.state_dict(), prefix)  # keeps the tied encoder.embed_tokens copy too
    sd["spiece_model"] = torch.frombuffer(bytearray(spm_model.read_bytes()), dtype=torch.uint8)
    save_file(sd, tmp_path / "checkpoint_with_te.safetensors")
    enc = load_text_encoder(tmp_path / "checkpoint_with_te.safetensors", device="cpu",
                            max_length=MAX_LEN)
    assert enc.info.layout == "comfyui"
    assert_matches(umt5, enc)


def test_wan_original_pth_matches_reference_and_wan_semantics(tmp_path, umt5, spm_model):
    wan = hf_to_wan(umt5.state_dict(), layers=2)
    torch.save(wan, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    (tmp_path / "google" / "umt5-xxl").mkdir(parents=True)
    shutil.copy(spm_model, tmp_path / "google" / "umt5-xxl" / "spiece.model")
    enc = load_text_encoder(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth", device="cpu",
                            max_length=MAX_LEN)
    assert (enc.info.family, enc.info.layout) == ("umt5", "original")
    assert_matches(umt5, enc)
    embeds, mask = enc.encode(PROMPTS)
    ids, _ = enc.tokenizer([" ".join(p.split()) for p in PROMPTS], MAX_LEN)
    oracle = wan_forward(wan, ids, mask, layers=2, heads=4) * mask.unsqueeze(-1)
    torch.testing.assert_close(embeds, oracle, atol=1e-5, rtol=1e-5)


def test_comfyui_scaled_fp8_is_dequantized(tmp_path, umt5, spm_model):
    sd = {k: v.clone() for k, v in umt5.state_dict().items()}
    quant: dict[str, torch.Tensor] = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}
    for key, value in sd.items():
        if key.endswith(("q.weight", "k.weight", "v.weight", "o.weight", "wo.weight")):
            scale = value.abs().max() / 448.0
            q = (value / scale).to(torch.float8_e4m3fn)
            quant[key], quant[key[:-6] + "scale_weight"] = q, scale.reshape(())
            sd[key] = q.float() * scale  # what the reference should compute with
        else:
            quant[key] = value
    umt5_dq = tiny_encoder("umt5", umt5.config.vocab_size)
    umt5_dq.load_state_dict(sd)
    save_file(plain(quant), tmp_path / "umt5_fp8_scaled.safetensors")
    shutil.copy(spm_model, tmp_path / "spiece.model")
    enc = load_text_encoder(tmp_path / "umt5_fp8_scaled.safetensors", device="cpu", max_length=MAX_LEN)
    assert_matches(umt5_dq, enc)
    # auto keeps the file's fp8 Linears in 8 bits (as ComfyUI does); the fp32 ones stay fp32
    q = enc.model.encoder.block[0].layer[0].SelfAttention.q
    assert q.weight.dtype == torch.float8_e4m3fn
    assert enc.model.encoder.block[0].layer[1].DenseReluDense.wi_0.weight.dtype == torch.float32


def test_classic_t5_single_file(tmp_path, spm_model):
    t5 = tiny_encoder("t5", 48)
    (tmp_path / "tokenizer").mkdir()
    shutil.copy(spm_model, tmp_path / "tokenizer" / "spiece.model")
    save_file(plain(t5.state_dict()), tmp_path / "t5.safetensors")
    enc = load_text_encoder(tmp_path / "t5.safetensors", device="cpu", max_length=MAX_LEN)
    assert enc.info.family == "t5" and enc.info.config["feed_forward_proj"] == "relu"
    assert_matches(t5, enc)


def test_default_max_length_is_wans_512(tmp_path, umt5, spm_model):
    shutil.copy(spm_model, tmp_path / "spiece.model")
    save_file(plain(umt5.state_dict()), tmp_path / "u.safetensors")
    enc = load_text_encoder(tmp_path / "u.safetensors", device="cpu")
    embeds, mask = enc.encode(["a cat"])
    assert embeds.shape == (1, 512, 32) and int(mask.sum()) < 10


# ---- errors ---------------------------------------------------------------------------------

def test_missing_tokenizer_names_every_place_tried(tmp_path, umt5):
    save_file(plain(umt5.state_dict()), tmp_path / "lonely.safetensors")
    with pytest.raises(ModelLoadError) as err:
        load_text_encoder(tmp_path / "lonely.safetensors", device="cpu")
    text = str(err.value)
    assert "lonely.safetensors" in text and "no tokenizer" in text
    assert "lonely.tokenizer" in text and "spiece.model" in text


def test_not_a_text_encoder_is_refused_clearly(tmp_path):
    save_file({"blocks.0.self_attn.q.weight": torch.zeros(4, 4)}, tmp_path / "dit.safetensors")
    with pytest.raises(ModelLoadError, match="not a T5/UMT5 text encoder"):
        load_text_encoder(tmp_path / "dit.safetensors", device="cpu")


def test_truncated_checkpoint_names_the_missing_weight(umt5):
    sd = dict(umt5.state_dict())
    del sd["encoder.final_layer_norm.weight"]
    with pytest.raises(ModelLoadError, match="final_layer_norm"):
        parse_t5_checkpoint(sd, source="cut.safetensors")


# ---- bundled sentence encoder ---------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder(resolve_text_encoder(BUNDLED_MINILM), device="cpu")


def test_bundled_minilm_resolves_and_loads_offline(minilm, tmp_path):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert BUNDLED_MINILM in builtin_text_encoders()
    # a built-in name wins over model folders, which are consulted for everything else
    assert resolve_text_encoder(BUNDLED_MINILM, ModelPaths([tmp_path])) == \
        builtin_text_encoders()[BUNDLED_MINILM]
    assert minilm.dim == 384 and minilm.max_length == 256
    assert minilm.info.family == "bert-sentence"


def test_minilm_similarity_ordering(minilm):
    texts = ["a red circle moving right on a black background",
             "a crimson ball gliding to the right over a pitch-black backdrop",
             "a blue square moving left on a gray background",
             "a chef chopping onions in a busy restaurant kitchen"]
    embeds, mask = minilm.encode(texts)
    assert embeds.shape == (4, 256, 384)
    vec = F.normalize(mean_pool(embeds, mask), dim=-1)
    sim = vec @ vec.T
    # the figures DESIGN.md quotes for sentence-transformers' pooling of this model
    assert sim[0, 1].item() == pytest.approx(0.42, abs=0.01)
    assert sim[0, 2].item() == pytest.approx(0.54, abs=0.01)
    assert sim[0, 1] > sim[0, 3] + 0.2 and sim[0, 2] > sim[0, 3] + 0.2
    # padded positions carry nothing
    n = int(mask[0].sum())
    assert torch.all(embeds[0, n:] == 0) and n == 11


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_stays_close_and_returns_float32(tmp_path, umt5, spm_model, dtype):
    shutil.copy(spm_model, tmp_path / "spiece.model")
    save_file(plain(umt5.state_dict()), tmp_path / "u.safetensors")
    enc = load_text_encoder(tmp_path / "u.safetensors", device="cpu", dtype=dtype, max_length=MAX_LEN)
    held = {n: p.dtype for n, p in enc.model.named_parameters()}
    assert held["encoder.block.0.layer.0.SelfAttention.q.weight"] == \
        {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    # transformers' rule: T5's `wo` stays float32 under fp16
    wo = held["encoder.block.0.layer.1.DenseReluDense.wo.weight"]
    assert wo == (torch.float32 if dtype == "fp16" else torch.bfloat16)
    embeds, mask = enc.encode(PROMPTS)
    assert embeds.dtype == torch.float32
    torch.testing.assert_close(embeds, reference(umt5, enc, PROMPTS), atol=0.1, rtol=0.05)


# ---- nodes ----------------------------------------------------------------------------------

def test_nodes_encode_prompt_and_empty_negative_from_model_folders(tmp_path, registry, umt5,
                                                                   spm_model):
    from engine.cache import ResultCache
    from engine.document import Workflow
    from engine.executor import Executor
    from engine.values import Conditioning

    folder = tmp_path / "models" / "text_encoders"
    (folder / "umt5_tiny.tokenizer").mkdir(parents=True)
    shutil.copy(spm_model, folder / "umt5_tiny.tokenizer" / "spiece.model")
    save_file(plain(umt5.state_dict()), folder / "umt5_tiny.safetensors")
    paths = ModelPaths([tmp_path / "models"])
    # the tokenizer folder is no model; the bundled encoder is always offered first
    assert paths.list("text_encoders") == [BUNDLED_MINILM, "umt5_tiny.safetensors"]
    ex = Executor(registry, ResultCache(disk_dir=None), model_paths=paths, temp_dir=tmp_path / "t",
                  device=torch.device("cpu"))
    wf = Workflow()
    wf.add_node("LoadTextEncoder", {"model": "umt5_tiny.safetensors", "max_length": MAX_LEN},
                node_id="load")
    wf.add_node("TextEncode", {"prompt": "a red circle", "negative_prompt": ""}, node_id="enc")
    wf.connect("load", "encoder", "enc", "encoder")
    report = ex.run(wf, targets=["enc"])
    assert report.status == "done", report.error
    cond = report.values["enc"]["conditioning"]
    assert isinstance(cond, Conditioning) and cond.prompt == "a red circle"
    assert cond.embeds.shape == cond.negative_embeds.shape == (1, MAX_LEN, 32)
    enc = load_text_encoder(folder / "umt5_tiny.safetensors", device="cpu", max_length=MAX_LEN)
    want, want_mask = enc.encode(["a red circle", ""])
    torch.testing.assert_close(cond.embeds, want[:1])
    torch.testing.assert_close(cond.negative_embeds, want[1:])
    assert torch.equal(cond.negative_mask, want_mask[1:]) and int(cond.negative_mask.sum()) == 1
    assert cond.meta["encoder_family"] == "umt5" and cond.meta["encoder"] == "umt5_tiny.safetensors"
    assert ex.run(wf, targets=["enc"]).nodes["enc"].status == "cached"


def test_load_text_encoder_node_names_the_missing_model(tmp_path, registry):
    from engine.cache import ResultCache
    from engine.document import Workflow
    from engine.executor import Executor

    ex = Executor(registry, ResultCache(disk_dir=None), model_paths=ModelPaths([tmp_path]),
                  temp_dir=tmp_path / "t", device=torch.device("cpu"))
    wf = Workflow()
    wf.add_node("LoadTextEncoder", {"model": "umt5_xxl_fp16.safetensors"}, node_id="load")
    report = ex.run(wf, targets=["load"])
    assert report.status != "done"
    assert "umt5_xxl_fp16.safetensors" in report.error.message
    assert "not found" in report.error.message
