"""The node registry: built-in discovery, user packs only from named folders, renames that keep
old files loading, and the catalogue the studio and `nodes --json` show."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.document import Workflow
from engine.registry import NodeRegistry, RegistryError, default_registry
from engine.schema import Input, NodeSpec, NodeType, Output
from engine.sockets import SocketType as T
from engine.sockets import can_connect
from engine.validation import validate

DATA = Path(__file__).parent / "data"


def test_builtin_nodes_cover_every_pipeline_stage(registry):
    stages = {"LoadTextEncoder", "LoadDiT", "LoadVAE", "Recaption", "TextEncode", "NoiseInit",
              "DiTDenoise", "VAEDecode", "VAEEncode", "ImageToVideo", "VideoCondition",
              "FrameInterpolate", "LoadImage", "LoadVideo", "SaveVideo", "SaveImage", "Preview"}
    assert stages <= set(registry.names())
    assert registry.pack_errors == []
    for spec in registry.specs():
        assert spec.description.strip(), f"{spec.name} needs a docstring: the studio shows it"


def test_user_packs_load_only_from_named_folders_and_broken_ones_are_reported():
    plain = default_registry()
    assert "CrashProcess" not in plain
    with_packs = default_registry([DATA / "node_pack", DATA / "broken_pack"])
    assert "CrashProcess" in with_packs
    assert len(with_packs.pack_errors) == 1
    assert "broken_nodes.py" in with_packs.pack_errors[0] and "broken on purpose" in with_packs.pack_errors[0]


class Renamed(NodeType):
    """A node whose old name still loads."""

    spec = NodeSpec(name="Renamed", category="test", description=__doc__, legacy_names=("OldName",),
                    inputs=(Input("value", T.INT, 1),), outputs=(Output("value", T.INT),))

    @classmethod
    def execute(cls, ctx, value):
        return {"value": value}


def test_legacy_names_resolve_to_the_renamed_type():
    registry = NodeRegistry()
    registry.register(Renamed)
    assert registry.get("OldName") is Renamed
    wf = Workflow()
    wf.add_node("OldName", {"value": 3}, node_id="n")
    assert validate(wf, registry) == []


def test_two_types_with_one_name_are_refused():
    registry = NodeRegistry()
    registry.register(Renamed)
    clash = type("Clash", (NodeType,), {"spec": Renamed.spec})
    with pytest.raises(RegistryError, match="registered twice"):
        registry.register(clash)


def test_socket_compatibility_gives_a_readable_reason():
    assert can_connect(T.LATENT, T.LATENT) == (True, "")
    assert can_connect(T.INT, T.FLOAT)[0]
    assert can_connect(T.VIDEO, T.ANY)[0]
    assert can_connect(T.LATENT, T.VIDEO) == (False, "needs VIDEO, got LATENT")
    assert not can_connect(T.FLOAT, T.INT)[0]


def test_catalogue_is_json_ready(registry):
    entry = next(e for e in registry.catalogue() if e["name"] == "DiTDenoise")
    names = [i["name"] for i in entry["inputs"]]
    assert names[:3] == ["model", "conditioning", "latent"]
    sampler = next(i for i in entry["inputs"] if i["name"] == "sampler")
    assert set(sampler["choices"]) == {"unipc", "uni_pc", "uni_pc_bh2", "euler", "dpmpp_2m", "lcm"}
