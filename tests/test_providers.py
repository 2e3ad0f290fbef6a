"""A workflow cannot choose where secrets go: endpoints and the variables holding their keys are
the user's providers; an address a graph names gets no key and runs only once approved; a key a
server echoes back is redacted everywhere. The fake servers are loopback-only and written here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from engine.document import Workflow, load_workflow
from engine.migrations import CURRENT_VERSION
from engine.providers import EndpointRefused, endpoints_needing_approval, resolve_endpoint
from engine.run_api import RunRequest, RunStatus
from tests.conftest_qt import ScriptedDialogs, make_window, wait_until  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-test-0123456789abcdef"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append(dict(self.headers))
        status, body = self.server.reply(self.headers)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def _caption(text: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.seen = []
    httpd.reply = lambda headers: (200, _caption("A fox in deep snow."))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def recaption_graph(**inputs) -> Workflow:
    wf = Workflow()
    wf.add_node("Recaption", {"prompt": "a fox", "backend": "openai", "model_name": "m",
                              "timeout": 5.0, **inputs}, node_id="cap")
    return wf


def test_version_2_files_lose_the_key_variable_and_keep_unknown_addresses():
    wf = load_workflow(ROOT / "tests" / "data" / "workflow_v2_recaption.json")
    assert wf.version == CURRENT_VERSION  # migrated through every step (3: providers)
    assert wf.nodes["local"].inputs == {"prompt": "a fox", "backend": "openai",
                                        "model_name": "llama3", "provider": "ollama-local"}
    assert wf.nodes["cloud"].inputs["provider"] == "openai" and "base_url" not in wf.nodes["cloud"].inputs
    assert wf.nodes["elsewhere"].inputs["base_url"] == "http://203.0.113.7:8080/v1"
    assert all("api_key_env" not in n.inputs for n in wf.nodes.values())
    assert endpoints_needing_approval(wf, {}) == ["http://203.0.113.7:8080/v1"]


def test_a_workflow_cannot_name_a_variable_to_read(executor, registry):
    wf = recaption_graph(api_key_env="AWS_SECRET_ACCESS_KEY")
    from engine.validation import validate

    assert any(p.input == "api_key_env" and p.code == "unknown_input" for p in validate(wf, registry))


def test_an_unapproved_address_is_refused_and_an_approved_one_gets_no_key(executor, server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    wf = recaption_graph(base_url=server.url)
    refused = executor.run(wf, targets=["cap"])
    assert refused.status is RunStatus.FAILED and server.seen == []
    assert "not one of your providers" in refused.error.message and server.url in refused.error.message
    allowed = executor.run(RunRequest(wf, ("cap",), approved_endpoints=(server.url,)))
    assert allowed.ok and allowed.values["cap"]["caption"] == "A fox in deep snow."
    assert len(server.seen) == 1 and "Authorization" not in server.seen[0]


def test_a_configured_provider_gets_its_key_and_an_echoed_key_is_redacted(executor, server, monkeypatch):
    monkeypatch.setenv("MY_PROVIDER_KEY", SECRET)
    executor.settings["providers"] = {"mine": {"base_url": server.url, "api_key_env": "MY_PROVIDER_KEY"}}
    server.reply = lambda headers: (401, {"error": {"message": f"bad key {headers['Authorization']}"}})
    failed = executor.run(recaption_graph(provider="mine"), targets=["cap"])
    assert server.seen[0]["Authorization"] == f"Bearer {SECRET}"
    assert failed.status is RunStatus.FAILED and "[redacted]" in failed.error.message
    fallback = executor.run(recaption_graph(provider="mine", on_error="use prompt", seed=1),
                            targets=["cap"])
    server.reply = lambda headers: (200, _caption(f"A fox. Your key is {SECRET}."))
    echoed = executor.run(recaption_graph(provider="mine", seed=2), targets=["cap"])
    assert echoed.values["cap"]["caption"] == "A fox. Your key is [redacted]."
    for report in (failed, fallback, echoed):
        assert SECRET not in json.dumps(report.to_json())
    # the graph may spell out the provider's own address: it is the same provider, with its key
    spelled = executor.run(recaption_graph(base_url=server.url + "/", seed=3), targets=["cap"])
    assert spelled.ok and server.seen[-1]["Authorization"] == f"Bearer {SECRET}"


def test_resolve_endpoint_rules():
    settings = {"providers": {"lab": {"base_url": "http://10.0.0.5:8000/v1", "api_key_env": "LAB_KEY"}}}
    assert resolve_endpoint("lab", "", settings).key_env == "LAB_KEY"
    assert resolve_endpoint("openai", "", settings).url == "https://api.openai.com/v1"
    with pytest.raises(EndpointRefused, match="no provider named 'nope'"):
        resolve_endpoint("nope", "", settings)
    with pytest.raises(EndpointRefused, match="over plain http"):
        resolve_endpoint("", "http://evil.example.com/v1", settings)
    with pytest.raises(EndpointRefused, match="not an http"):
        resolve_endpoint("", "file:///etc/passwd", settings)
    approved = resolve_endpoint("", "HTTP://Evil.example.com/v1/", settings,
                                ["http://evil.example.com/v1"])
    assert approved.key_env == "" and approved.provider == ""


def test_the_cli_refuses_until_the_address_is_allowed(tmp_path, server):
    path = tmp_path / "wf.json"
    wf = recaption_graph(base_url=server.url)
    wf.add_node("SaveImage", {}, node_id="unused")  # only so the graph has an output node
    wf.remove_node("unused")
    wf.save(path)
    env = dict(os.environ, REELGRAPH_CACHE_DIR=str(tmp_path / "c"), OPENAI_API_KEY=SECRET)
    base = [sys.executable, str(ROOT / "main.py"), "run", str(path), "--out", str(tmp_path / "o"),
            "--target", "cap"]
    refused = subprocess.run(base, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and f"--allow-endpoint {server.url}" in refused.stderr
    assert server.seen == []
    allowed = subprocess.run(base + ["--allow-endpoint", server.url], env=env,
                             capture_output=True, text=True, timeout=120)
    assert allowed.returncode == 0, allowed.stderr
    assert len(server.seen) == 1 and "Authorization" not in server.seen[0]
    assert SECRET not in (tmp_path / "o" / "report.json").read_text()


def test_the_studio_asks_before_contacting_an_unknown_address(qtbot, make_window, server):
    window = make_window(dialogs=ScriptedDialogs(confirm=[False, True]))
    node = window.editor.add_node("Recaption", (0, 0))
    for name, value in (("prompt", "a fox"), ("backend", "openai"), ("model_name", "m"),
                        ("base_url", server.url)):
        window.editor.set_input(node, name, value)
    window.run_to([node])
    assert not window.runs.busy and server.seen == []  # declined: nothing was queued
    assert "unknown address" in window.dialogs.asked[-1][1]
    window.run_to([node])
    wait_until(qtbot, lambda: not window.runs.busy, 60)
    assert window.runs.last_status == "done" and len(server.seen) == 1
    window.run_to([node])  # approved for the session: not asked again
    wait_until(qtbot, lambda: not window.runs.busy, 60)
    assert sum("unknown address" in text for _, text in window.dialogs.asked) == 2
