"""Model folders (ComfyUI layout, several roots) and safe weight loading (no code ever runs)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import zipfile

import pytest
import torch

from engine.errors import NodeError
from engine.models.paths import (BUNDLED_MINILM, ModelNotFoundError, ModelPaths, default_model_paths,
                                 fingerprint)
from engine.models.safe_load import (ModelLoadError, file_sha256, load_state_dict, read_metadata,
                                     save_state_dict)


def _touch(path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def two_roots(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _touch(a / "unet" / "wan" / "t2v.safetensors")  # ComfyUI's old folder name
    _touch(a / "vae" / "wan_2.1_vae.pth")
    _touch(a / "vae" / "notes.txt")  # not a weight file
    _touch(b / "diffusion_models" / "other.ckpt")
    _touch(b / "diffusion_models" / "wan" / "t2v.safetensors", b"second root copy")
    _touch(b / "text_encoders" / "minilm" / "config.json", b"{}")  # a HF model folder
    _touch(b / "text_encoders" / "minilm" / "model.safetensors")
    _touch(b / "clip" / "umt5.bin")
    return a, b


def test_list_reads_every_root_and_alias_folder(two_roots):
    paths = ModelPaths(list(two_roots))
    assert paths.list("diffusion_models") == ["other.ckpt", "wan/t2v.safetensors"]
    assert paths.list("unet") == paths.list("diffusion_models")
    assert paths.list("vae") == ["wan_2.1_vae.pth"]
    # a folder with config.json is one model, not searched inside
    assert paths.list("text_encoders") == [BUNDLED_MINILM, "minilm", "umt5.bin"]  # bundled first
    assert paths.list("llm") == []


def test_resolve_first_root_wins_and_folders_resolve(two_roots):
    a, b = two_roots
    paths = ModelPaths([a, b, a])  # a root named twice is searched once
    assert len(paths.roots) == 2
    assert paths.resolve("diffusion_models", "wan/t2v.safetensors") == a / "unet" / "wan" / "t2v.safetensors"
    assert paths.resolve("diffusion_models", "wan\\t2v.safetensors").read_bytes() == b"x"
    assert paths.resolve("clip", "minilm") == b / "text_encoders" / "minilm"
    absolute = b / "diffusion_models" / "other.ckpt"
    assert paths.resolve("diffusion_models", str(absolute)) == absolute


def test_resolve_missing_lists_folders_and_suggests(two_roots):
    a, b = two_roots
    paths = ModelPaths([a, b])
    with pytest.raises(ModelNotFoundError) as err:
        paths.resolve("diffusion_models", "wan/t2v_typo.safetensors")
    text = str(err.value)
    assert "wan/t2v_typo.safetensors" in text
    assert str(a / "unet") in text and str(b / "diffusion_models") in text
    assert str(a / "diffusion_models") + " (missing)" in text
    assert "Did you mean: wan/t2v.safetensors" in text
    assert isinstance(err.value, NodeError)
    for bad in ("../a/vae/wan_2.1_vae.pth", "", str(a / "nope.safetensors")):
        with pytest.raises(ModelNotFoundError):
            paths.resolve("vae", bad)
    with pytest.raises(ValueError, match="unknown model kind"):
        paths.list("controlnet")  # upscale_models etc. are listed (issue 17)


def test_default_roots_order(tmp_path, monkeypatch, repo_root):
    env_a, env_b, extra = tmp_path / "env_a", tmp_path / "env_b", tmp_path / "extra"
    monkeypatch.setenv("REELGRAPH_MODEL_ROOTS", os.pathsep.join([str(env_a), "", str(env_b)]))
    paths = default_model_paths(extra_roots=[extra])
    roots = paths.roots
    assert roots[0].name == "models" and "reelgraph" in str(roots[0]).lower()
    assert roots[1:4] == [env_a, env_b, extra]
    assert roots[-1] == repo_root / "resources" / "models"
    _touch(env_b / "vae" / "v.safetensors")
    assert paths.resolve("vae", "v.safetensors") == env_b / "vae" / "v.safetensors"


def test_fingerprint_changes_when_file_replaced(tmp_path):
    f = tmp_path / "m.safetensors"
    _touch(f, b"abc")
    first = fingerprint(f)
    assert first[0] == 3
    _touch(f, b"abcdef")
    assert fingerprint(f) != first and fingerprint(f)[0] == 6
    folder = tmp_path / "folder"
    _touch(folder / "config.json", b"{}")
    _touch(folder / "w.safetensors", b"12345")
    assert fingerprint(folder)[0] == 7


# ---- safe loading -------------------------------------------------------------------------------

def test_safetensors_round_trip_with_metadata(tmp_path):
    tensors = {"a.weight": torch.randn(3, 4), "b": torch.arange(5)}
    path = save_state_dict(tensors, tmp_path / "m.safetensors", metadata={"config": '{"x": 1}'})
    loaded = load_state_dict(path)
    assert set(loaded) == {"a.weight", "b"}
    assert torch.equal(loaded["a.weight"], tensors["a.weight"]) and torch.equal(loaded["b"], tensors["b"])
    assert read_metadata(path) == {"config": '{"x": 1}'}


def test_truncated_safetensors_names_file_and_byte_counts(tmp_path):
    path = save_state_dict({"w": torch.randn(64, 64)}, tmp_path / "cut.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelLoadError) as err:
        load_state_dict(path)
    assert str(path) in str(err.value) and "truncated" in str(err.value)
    assert f"found {len(data) - 1000}" in str(err.value)
    path.write_bytes(data[:20])  # even the header is cut
    with pytest.raises(ModelLoadError, match="truncated"):
        load_state_dict(path)


def test_empty_and_missing_and_unknown_files(tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty") as err:
        load_state_dict(empty)
    assert str(empty) in str(err.value)
    missing = tmp_path / "missing.pt"
    with pytest.raises(ModelLoadError, match="does not exist") as err:
        load_state_dict(missing)
    assert str(missing) in str(err.value)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="unsupported file type"):
        load_state_dict(gguf)


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".pt", ".ckpt", ".bin"])
def test_pickle_with_code_is_refused_without_running(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    torch.save({"weight": torch.zeros(2), "payload": _RunsCode(marker)}, path)
    with pytest.raises(ModelLoadError) as err:
        load_state_dict(path)
    assert not marker.exists()
    text = str(err.value)
    assert str(path) in text and "could run code" in text and "refused" in text
    # the same file given to a model loader fails the same way, before anything else
    from engine.models.wan_dit import load_dit

    with pytest.raises(ModelLoadError, match="could run code"):
        load_dit(path)
    assert not marker.exists()


def test_plain_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"w": _RunsCode(marker)}, f, protocol=2)
    with pytest.raises(ModelLoadError, match="could run code"):
        load_state_dict(path)
    assert not marker.exists()


def test_weights_only_checkpoint_is_unwrapped(tmp_path):
    path = tmp_path / "trained.ckpt"
    torch.save({"state_dict": {"layer.weight": torch.ones(2, 2)}, "epoch": 7}, path)
    assert list(load_state_dict(path)) == ["layer.weight"]
    torch.save({"model": {"module": {"x": torch.ones(1)}}}, path)
    assert list(load_state_dict(path)) == ["x"]
    torch.save({"epoch": 7}, path)
    with pytest.raises(ModelLoadError, match="no tensors"):
        load_state_dict(path)


def test_corrupt_zip_checkpoint(tmp_path):
    path = tmp_path / "half.pth"
    torch.save({"w": torch.randn(100)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ModelLoadError, match="truncated or corrupt") as err:
        load_state_dict(path)
    assert str(path) in str(err.value)


def test_folder_of_shards_loads_together(tmp_path):
    folder = tmp_path / "transformer"
    save_state_dict({"a": torch.ones(1)}, folder / "diffusion_pytorch_model-00001-of-00002.safetensors")
    save_state_dict({"b": torch.zeros(1)}, folder / "diffusion_pytorch_model-00002-of-00002.safetensors")
    assert sorted(load_state_dict(folder)) == ["a", "b"]


def test_sha256_streams_and_tracks_changes(tmp_path):
    path = tmp_path / "w.bin"
    data = os.urandom(10_000)
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(data + b"more")
    assert file_sha256(path) == hashlib.sha256(data + b"more").hexdigest()


# ---- damaged and hostile weight files, crafted byte by byte ---------------------------------------

def _safetensors(path, header, data: bytes = b"") -> str:
    """A .safetensors file from a header (dict, or raw bytes) and a data section."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return str(path)


def _f32(shape, begin, end):
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


@pytest.mark.parametrize("header,data,expected", [
    (None, b"\x13\x37\xc0\xde\xfe\xed\xfa\xce", "not a safetensors file"),  # 8 random bytes
    (None, struct.pack("<Q", 4096) + b"{}", "header of 4096 bytes but the file has only 10"),
    (b'{"w": {"dtype": "F32", ', b"", "not valid JSON"),
    (b"[1, 2]", b"", "not a JSON object"),
    (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"", "not valid JSON"),
    ({"w": _f32([4], 0, 16)}, bytes(8), "tensor 'w' has offsets outside the file"),
    ({"a": _f32([2], 0, 8), "b": _f32([2], 4, 12)}, bytes(12), "tensors 'a' and 'b' overlap"),
    ({"a": _f32([1], 0, 4), "b": _f32([1], 8, 12)}, bytes(12), "'b' starts at byte 8"),
    ({"w": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, bytes(4), "unknown dtype 'F99'"),
    ({"w": _f32([2, 3], 0, 20)}, bytes(20), "needs 24 bytes but its data_offsets 0..20 span 20"),
    ({"w": _f32([-1], 0, 4)}, bytes(4), "invalid shape [-1]"),
    ({"w": _f32([1], "0", "4")}, bytes(4), "invalid data_offsets"),
    ({"w": _f32([1], 4, 0)}, bytes(4), "invalid data_offsets"),
    ({"w": 5}, b"", "no dtype/shape/data_offsets"),
    ({"__metadata__": {"config": {"a": 1}}}, b"", "__metadata__ must map names to strings"),
    ({"w": _f32([1], 0, 4)}, bytes(8), "accounts for 4 bytes of tensor data"),
])
def test_damaged_safetensors_name_the_file_and_the_damage(tmp_path, header, data, expected):
    path = tmp_path / "bad.safetensors"
    if header is None:  # `data` is the whole file
        path.write_bytes(data)
    else:
        _safetensors(path, header, data)
    for read in (load_state_dict, read_metadata):
        with pytest.raises(ModelLoadError) as err:
            read(path)
        text = str(err.value)
        assert str(path) in text and expected in text, text
    from engine.models.wan_dit import load_dit

    with pytest.raises(ModelLoadError, match="bad.safetensors"):
        load_dit(path, device="cpu")


def test_truncated_safetensors_gives_sizes(tmp_path):
    path = save_state_dict({"w": torch.zeros(1024, 1024)}, tmp_path / "cut.safetensors")  # 4 MB
    path.write_bytes(path.read_bytes()[: 2**20])
    with pytest.raises(ModelLoadError) as err:
        load_state_dict(path)
    text = str(err.value)
    assert "truncated: the header says 4.0 MB" in text and "the file has 1023.9 kB" in text, text


def _rewrite_zip(src, dst, edit) -> None:
    """Copy a torch.save zip with `edit(name, bytes) -> bytes` applied to each record."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            zout.writestr(name, edit(name, zin.read(name)))


def test_damaged_pickles_name_the_file_and_the_damage(tmp_path):
    cases = {"random.pt": (b"\x13\x37\xc0\xde\xfe\xed\xfa\xce", "not a PyTorch checkpoint"),
             "notes.pth": (b"hello, this is not a model", "not a PyTorch checkpoint"),
             "garbage.ckpt": (b"\x80\x02" + bytes(range(256)), "cannot"),
             "zipish.pt": (b"PK\x03\x04" + bytes(64), "truncated or corrupt")}
    for name, (data, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ModelLoadError) as err:
            load_state_dict(path)
        assert str(path) in str(err.value) and expected in str(err.value), str(err.value)

    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(123456)}, good)
    numel = b"J" + struct.pack("<i", 123456)  # BININT in data.pkl: the storage's element count
    huge = tmp_path / "huge.pt"  # claims 8 GB of storage in a 0.5 MB record
    _rewrite_zip(good, huge, lambda n, b: b.replace(numel, b"J" + struct.pack("<i", 2**31 - 1))
                 if n.endswith("data.pkl") else b)
    with pytest.raises(ModelLoadError, match="truncated or corrupt checkpoint") as err:
        load_state_dict(huge)
    assert str(huge) in str(err.value)
    legacy = tmp_path / "legacy.pt"  # pre-zip torch.save format: pickles then raw storages
    torch.save({"w": torch.ones(4)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(load_state_dict(legacy)["w"], torch.ones(4))
    legacy.write_bytes(legacy.read_bytes()[:-8])
    with pytest.raises(ModelLoadError, match="truncated or corrupt checkpoint"):
        load_state_dict(legacy)
