"""Recaptioning: the builtin grammar is deterministic and keeps the prompt; the OpenAI-compatible
backend speaks the protocol to a real local HTTP server; the local backend runs a tiny causal LM."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from engine.models.paths import ModelPaths
from engine.recaption import RecaptionError, recaption, system_prompt, tidy_caption
from engine.recaption.builtin import (DENSE, SlotVocabulary, TemplateGrammar, builtin_caption,
                                      count_words, words_of)
from engine.recaption.local_llm import build_prompt_ids, load_llm

ROOT = Path(__file__).resolve().parents[1]


# ---- builtin --------------------------------------------------------------------------------

def test_builtin_is_deterministic_and_keeps_the_prompt():
    prompt = "a red circle moving right on a black background"
    caption = builtin_caption(prompt, seed=3)
    assert caption == builtin_caption(prompt, seed=3) == recaption(prompt, "builtin", seed=3)
    assert caption.startswith("A red circle moving right on a black background.")
    assert set(words_of(prompt)) <= set(words_of(caption))
    assert 80 <= count_words(caption) <= 100
    assert "red circle" in caption[len(prompt):]  # the subject is carried into the added detail
    assert any(builtin_caption("a dog", seed=s) != builtin_caption("a dog", seed=0) for s in (1, 2, 3))


def test_builtin_is_the_same_in_another_process():
    """Python salts str hashes per process; the caption must not depend on that."""
    prompt = "a cat sleeps on a warm windowsill"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from engine.recaption.builtin import builtin_caption; "
            "print(builtin_caption(sys.argv[2], seed=5))")
    outs = {subprocess.run([sys.executable, "-c", code, str(ROOT), prompt], capture_output=True,
                           text=True, check=True, env={"PYTHONHASHSEED": str(h)}).stdout.strip()
            for h in (1, 2)}
    assert outs == {builtin_caption(prompt, seed=5)}


def test_builtin_adds_only_what_the_prompt_lacks():
    prompt = "a slow tracking shot of a fox running through a snowy forest at dusk, watercolor style"
    caption = builtin_caption(prompt, seed=0, max_words=100)
    by_name = {a.name: a for a in DENSE.aspects}
    for covered in ("camera", "motion", "setting", "lighting", "style"):
        for sentence in by_name[covered].sentences:
            assert sentence.format(subject="fox") not in caption
    assert "The fox" in caption  # subject found after "a slow tracking shot of"
    assert count_words(caption) >= 80  # elaborations fill up to the target length


def test_builtin_word_limits():
    assert count_words(builtin_caption("a dog", seed=0, max_words=40)) <= 40
    long_prompt = " ".join(["a very long prompt about a red fox in the snow"] * 12)  # 132 words
    caption = builtin_caption(long_prompt, seed=0, max_words=100)
    assert caption.startswith(long_prompt[0].upper() + long_prompt[1:])  # user words never cut
    assert recaption("   ", "builtin") == ""


DEMO_LIKE = TemplateGrammar(
    name="shapes-test",
    template="a {colour} {shape} {motion} on a {background} background",
    slots={
        "colour": SlotVocabulary({"red": ("crimson", "scarlet"), "blue": ("azure", "navy"),
                                  "black": ("pitch black", "ebony"), "gray": ("grey",)}),
        "shape": SlotVocabulary({"circle": ("ball", "disc", "dot"), "square": ("box", "cube")},
                                default="circle"),
        "motion": SlotVocabulary({"moving right": ("to the right", "rightward", "right"),
                                  "moving left": ("to the left", "leftward", "left")},
                                 default="moving right"),
        "background": SlotVocabulary(
            {"black": ("pitch black", "dark"), "gray": ("grey",), "red": (), "blue": ()},
            default="black", anchors=("background", "backdrop", "bg")),
    })


def test_template_grammar_normalises_paraphrases_onto_the_caption_grammar():
    g = DEMO_LIKE
    assert g.caption("a crimson ball gliding to the right over a pitch-black backdrop", 0, 100) == \
        "a red circle moving right on a black background"
    assert g.caption("a blue square moving left on a gray background", 0, 100) == \
        "a blue square moving left on a gray background"
    assert g.caption("navy cube drifting leftward, grey backdrop", 0, 100) == \
        "a blue square moving left on a gray background"
    # a background colour named first still lands in its slot
    assert g.caption("on a dark background a scarlet dot moves right", 0, 100) == \
        "a red circle moving right on a black background"
    # missing slots take defaults; unnamed colour is a seeded choice, stable per seed
    first = g.caption("a box", 4, 100)
    assert first == g.caption("a box", 4, 100) and first.startswith("a ")
    assert first.endswith("square moving right on a black background")
    assert builtin_caption("a crimson ball", grammar=g).startswith("a red circle")


# ---- tidy -----------------------------------------------------------------------------------

def test_tidy_caption_strips_labels_and_caps_length():
    assert tidy_caption('Caption: "A fox  runs.\n"', 100) == "A fox runs."
    text = " ".join(f"Sentence {i} has five words." for i in range(30))  # 150 words
    out = tidy_caption(text, 100)
    assert count_words(out) <= 100 and out.endswith(".")
    assert count_words(tidy_caption("word " * 150, 100)) == 100


# ---- openai-compatible endpoint -------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append({"path": self.path, "headers": dict(self.headers),
                                     "body": json.loads(body)})
        status, payload = self.server.reply
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests, httpd.reply = [], (200, {})
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _answer(content: str) -> dict:
    return {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


def test_openai_request_and_caption(server, monkeypatch):
    monkeypatch.setenv("REELGRAPH_TEST_KEY", "sk-test-secret")
    server.reply = (200, _answer("Caption: A red circle glides right across a black void."))
    port = server.server_address[1]
    out = recaption("a red circle moving right", "openai", base_url=f"http://127.0.0.1:{port}/v1",
                    model_name="tiny-chat", api_key_env="REELGRAPH_TEST_KEY", seed=7, max_words=90)
    assert out == "A red circle glides right across a black void."
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test-secret"
    body = req["body"]
    assert body["model"] == "tiny-chat" and body["seed"] == 7 and body["stream"] is False
    assert body["messages"] == [{"role": "system", "content": system_prompt(90)},
                                {"role": "user", "content": "a red circle moving right"}]
    assert "80 to 100 words" in system_prompt(100) and "Keep the user's meaning" in system_prompt()


def test_openai_base_url_forms_and_no_key(server, monkeypatch):
    monkeypatch.delenv("REELGRAPH_TEST_KEY", raising=False)
    server.reply = (200, _answer("A caption."))
    port = server.server_address[1]
    for base in (f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/v1/chat/completions"):
        assert recaption("x", "openai", base_url=base, model_name="m",
                         api_key_env="REELGRAPH_TEST_KEY") == "A caption."
    assert [r["path"] for r in server.requests] == ["/v1/chat/completions"] * 2
    assert all("Authorization" not in r["headers"] for r in server.requests)


def test_openai_http_error_names_the_key_variable_not_the_key(server, monkeypatch):
    monkeypatch.setenv("REELGRAPH_TEST_KEY", "sk-test-secret")
    server.reply = (401, {"error": {"message": "Incorrect API key provided"}})
    port = server.server_address[1]
    with pytest.raises(RecaptionError) as err:
        recaption("x", "openai", base_url=f"http://127.0.0.1:{port}/v1", model_name="m",
                  api_key_env="REELGRAPH_TEST_KEY")
    text = str(err.value)
    assert "Recaption (openai)" in text and "HTTP 401" in text and "Incorrect API key" in text
    assert "REELGRAPH_TEST_KEY" in text and "sk-test-secret" not in text


def test_openai_bad_json_and_missing_content(server):
    port = server.server_address[1]
    server.reply = (200, b"<html>not an api</html>")
    with pytest.raises(RecaptionError, match="did not answer with JSON"):
        recaption("x", "openai", base_url=f"http://127.0.0.1:{port}/v1", model_name="m")
    server.reply = (200, {"choices": []})
    with pytest.raises(RecaptionError, match="without choices"):
        recaption("x", "openai", base_url=f"http://127.0.0.1:{port}/v1", model_name="m")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_connection_refused_is_clear_and_can_fall_back(caplog):
    base = f"http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(RecaptionError) as err:
        recaption("a fox", "openai", base_url=base, model_name="m", timeout=5)
    assert "connection refused" in str(err.value) and "ollama serve" in str(err.value)
    assert "use prompt" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="reelgraph.recaption"):
        out = recaption("a fox", "openai", base_url=base, model_name="m", timeout=5,
                        on_error="use prompt")
    assert out == "a fox"
    assert any("connection refused" in r.getMessage() for r in caplog.records)


def test_openai_refuses_non_http_urls():
    with pytest.raises(RecaptionError, match="not an http"):
        recaption("x", "openai", base_url="file:///etc/passwd", model_name="m")


# ---- local causal LM ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("models")
    folder = root / "llm" / "tiny-gpt2"
    words = sorted(set(words_of(system_prompt(100) + " a red circle moving right on a black "
                                "background camera light soft slow fox snow system user assistant")))
    vocab = {"<unk>": 0, "<pad>": 1, "<eos>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                  eos_token="<eos>")
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} "
                         "{% endfor %}assistant :")
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_positions=256, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=2, eos_token_id=2, pad_token_id=1)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def test_local_llm_is_seeded_and_returns_text(tiny_llm):
    kw = dict(llm=tiny_llm, max_new_tokens=24, device="cpu")
    torch.manual_seed(123)
    before = torch.rand(1)
    first = recaption("a red circle moving right", "local", seed=11, **kw)
    assert isinstance(first, str) and first.strip()
    assert all(w in words_of(system_prompt(100) + " a red circle moving right on a black background"
                             " camera light soft slow fox snow system user assistant unk")
               for w in words_of(first))
    assert recaption("a red circle moving right", "local", seed=11, **kw) == first
    assert recaption("a red circle moving right", "local", seed=12, **kw) != first
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), before)  # the global RNG stream is left as it was


def test_local_llm_uses_chat_template_and_resolves_from_model_folders(tiny_llm):
    tokenizer, _ = load_llm(tiny_llm)
    ids = build_prompt_ids(tokenizer, "be brief", "a fox")
    text = tokenizer.decode(ids[0]).split()
    assert text[:2] == ["system", "<unk>"] and text[-2:] == ["assistant", "<unk>"]  # the template
    assert "user" in text and text[-4:-2] == ["a", "fox"]
    paths = ModelPaths([tiny_llm.parent.parent])
    by_name = recaption("a fox", "local", llm="tiny-gpt2", model_paths=paths, seed=1,
                        max_new_tokens=12, device="cpu")
    assert by_name == recaption("a fox", "local", llm=tiny_llm, seed=1, max_new_tokens=12,
                                device="cpu")


def test_local_llm_errors_name_the_backend_and_fix(tmp_path):
    with pytest.raises(RecaptionError, match=r"Recaption \(local\): no language model chosen"):
        recaption("a fox", "local")
    with pytest.raises(RecaptionError, match="not found"):
        recaption("a fox", "local", llm="missing-model", model_paths=ModelPaths([tmp_path]))
    assert recaption("a fox", "local", llm=tmp_path, on_error="use prompt") == "a fox"


# ---- the node -------------------------------------------------------------------------------

def test_recaption_node_in_a_graph(executor, server):
    from engine.document import Workflow

    server.reply = (200, _answer("A fox trots through deep snow under a pale sky."))
    port = server.server_address[1]
    wf = Workflow()
    wf.add_node("Recaption", {"prompt": "a fox in snow", "backend": "builtin", "seed": 2}, node_id="b")
    wf.add_node("Recaption", {"prompt": "a fox in snow", "backend": "openai", "model_name": "m",
                              "base_url": f"http://127.0.0.1:{port}/v1"}, node_id="o")
    from engine.run_api import RunRequest

    request = RunRequest(wf, ("b", "o"), approved_endpoints=(f"http://127.0.0.1:{port}/v1",))
    report = executor.run(request)
    assert report.status == "done", report.error
    assert report.values["b"]["caption"] == builtin_caption("a fox in snow", seed=2)
    assert report.values["o"]["caption"] == "A fox trots through deep snow under a pale sky."
    again = executor.run(request)
    assert {n: v.status for n, v in again.nodes.items()} == {"b": "cached", "o": "cached"}
    assert len(server.requests) == 1  # cached by inputs: the endpoint is asked once
