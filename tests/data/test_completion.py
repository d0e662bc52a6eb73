"""Content completion: template, a local OpenAI-compatible server, and a tiny Hugging Face model."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mor_ext.data.completion import (
    Completer, CompletionError, HFCompleter, OpenAICompatibleCompleter, TemplateCompleter, complete_trajectory,
    completion_messages,
)
from mor_ext.data.converters import PLACEHOLDER, from_xlam
from mor_ext.data.verification import verify, verify_all

XLAM_TOOLS = [
    {"name": "greatest_common_divisor_of", "description": "Greatest common divisor of two integers.",
     "parameters": {"a": {"type": "int", "description": "First."}, "b": {"type": "int", "description": "Second."}}},
    {"name": "percent_change_between", "description": "Percent change from an old value to a new one.",
     "parameters": {"old_value": {"type": "float", "description": "Old."},
                    "new_value": {"type": "float", "description": "New."}}},
]
RECORDS = [
    {"id": 1, "query": "What is the gcd of 84 and 36?", "tools": json.dumps(XLAM_TOOLS),
     "answers": json.dumps([{"name": "greatest_common_divisor_of", "arguments": {"a": 84, "b": 36}}])},
    {"id": 2, "query": "gcd of 10 and 4, and the change from 80 to 100 in percent?", "tools": XLAM_TOOLS,
     "answers": [{"name": "greatest_common_divisor_of", "arguments": {"a": "10", "b": 4}},
                 {"name": "percent_change_between", "arguments": {"old_value": 80, "new_value": 100}}]},
    {"id": 3, "query": "Book me a flight to Oslo.", "tools": XLAM_TOOLS, "answers": []},
]


@pytest.fixture
def converted():
    return [from_xlam(r) for r in RECORDS]


def test_template_completion_makes_converted_records_pass_verification(converted):
    _, before = verify_all(converted)
    assert dict(before.rejected_by_reason) == {"needs completion": 3}
    done = [complete_trajectory(t) for t in converted]
    for t in done:
        assert PLACEHOLDER not in [turn.content for turn in t.turns]
        assert not {"needs_completion", "needs_observation", "placeholder_turns"} & set(t.meta)
        assert t.meta["completed_by"] == "TemplateCompleter"
    gcd = done[0]
    assert json.loads(gcd.turns[3].content) == {"result": 12}
    assert "`greatest_common_divisor_of`" in gcd.turns[1].content and "84" in gcd.turns[1].content
    assert "12" in gcd.turns[-1].content
    assert json.loads(done[1].turns[3].content) == [{"result": 2}, {"result": 25}]
    assert "none of the available tools" in done[2].turns[-1].content
    kept, report = verify_all(done)
    assert len(kept) == 3, report.format()
    assert dict(report.repairs_by_reason) == {"type mismatch": 1}  # record 2's "10"
    assert complete_trajectory(converted[0]) == done[0]  # deterministic


def test_unrunnable_observation_stays_marked():
    t = from_xlam({"query": "Roll two dice.", "answers": [{"name": "roll_dice", "arguments": {"count": 2}}],
                   "tools": [{"name": "roll_dice", "description": "Roll dice.", "parameters": {"count": {"type": "int"}}}]})
    done = complete_trajectory(t)
    assert done.meta["needs_observation"] is True and done.meta["placeholder_turns"] == [3]
    assert "needs_completion" not in done.meta
    assert verify(done).rejection.reason == "needs completion"


class Recorder:
    def __init__(self, text="A thought."):
        self.text, self.calls = text, []

    def complete(self, trajectory, turn_index, role):
        self.calls.append((turn_index, role))
        return self.text


def test_completer_protocol_order_and_empty_answers(converted):
    rec = Recorder()
    assert isinstance(rec, Completer) and isinstance(TemplateCompleter(), Completer)
    complete_trajectory(converted[0], rec)
    assert rec.calls == [(1, "reasoner"), (4, "reasoner"), (5, "summarizer")]
    with pytest.raises(CompletionError, match="gave no reasoner text for turn 1"):
        complete_trajectory(converted[0], Recorder("  "))


def test_completion_messages_carry_instruction_and_context(converted):
    done = complete_trajectory(converted[0])
    system, user = completion_messages(done, 1, "reasoner")
    assert system["role"] == "system" and "reasoner" in system["content"]
    assert "What is the gcd of 84 and 36?" in user["content"] and "greatest_common_divisor_of" in user["content"]
    assert '"a": 84' in user["content"]  # the call the thought must lead to
    _, user = completion_messages(done, 5, "summarizer")
    assert '{"result": 12}' in user["content"]
    with pytest.raises(ValueError, match="observation"):
        completion_messages(done, 3, "observation")


# ----------------------------------------------------------------------------- a local HTTP server
class _Server:
    """Canned chat completions on 127.0.0.1; ``plan`` is a list of (status, body or None, delay_s)
    answered in order (the last repeats); every request body is recorded."""

    def __init__(self, plan):
        self.plan, self.requests = list(plan), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                server.requests.append({"path": self.path, "headers": dict(self.headers),
                                        "body": json.loads(self.rfile.read(length))})
                status, body, delay = server.plan.pop(0) if len(server.plan) > 1 else server.plan[0]
                time.sleep(delay)
                data = json.dumps(body).encode() if body is not None else b"oops"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def chat(text):
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


def test_openai_compatible_completer_fills_slots(converted):
    with _Server([(200, chat("  Served text.  "), 0)]) as srv:
        completer = OpenAICompatibleCompleter(srv.url + "/", "tiny-model", api_key="k", max_tokens=64)
        done = complete_trajectory(converted[0], completer)
    assert [done.turns[i].content for i in (1, 4, 5)] == ["Served text."] * 3
    assert done.meta["completed_by"] == "OpenAICompatibleCompleter" and verify(done).ok
    assert len(srv.requests) == 3
    first = srv.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["headers"]["Authorization"] == "Bearer k"
    body = first["body"]
    assert body["model"] == "tiny-model" and body["max_tokens"] == 64 and body["temperature"] == 0.0
    system, user = body["messages"]
    assert "reasoner of a tool-using agent" in system["content"]
    assert "What is the gcd of 84 and 36?" in user["content"] and "greatest_common_divisor_of" in user["content"]
    last = srv.requests[2]["body"]["messages"]
    assert "summarizer" in last[0]["content"] and '{"result": 12}' in last[1]["content"]


def test_openai_compatible_completer_retries_then_succeeds(converted):
    with _Server([(503, {"error": "busy"}, 0), (200, chat("Fine."), 0)]) as srv:
        completer = OpenAICompatibleCompleter(srv.url, "m", max_retries=2, backoff_s=0.01)
        assert completer.complete(converted[0], 1, "reasoner") == "Fine."
    assert len(srv.requests) == 2


def test_openai_compatible_completer_errors(converted):
    with _Server([(400, {"error": {"message": "bad model name"}}, 0)]) as srv:
        completer = OpenAICompatibleCompleter(srv.url, "m", max_retries=3, backoff_s=0.01)
        with pytest.raises(CompletionError, match=r"HTTP 400.*bad model name"):
            completer.complete(converted[0], 1, "reasoner")
    assert len(srv.requests) == 1  # a client error is not retried
    with _Server([(500, {"error": "boom"}, 0)]) as srv:
        completer = OpenAICompatibleCompleter(srv.url, "m", max_retries=2, backoff_s=0.01)
        with pytest.raises(CompletionError, match=r"after 3 attempt\(s\).*HTTP 500"):
            completer.complete(converted[0], 1, "reasoner")
    assert len(srv.requests) == 3
    for plan, match in [((200, None, 0), "not JSON"), ((200, {"choices": []}, 0), "no choices"),
                        ((200, chat(""), 0), "empty completion")]:
        with _Server([plan]) as srv:
            with pytest.raises(CompletionError, match=match):
                OpenAICompatibleCompleter(srv.url, "m").complete(converted[0], 1, "reasoner")


def test_openai_compatible_completer_timeout(converted):
    with _Server([(200, chat("late"), 1.0)]) as srv:
        completer = OpenAICompatibleCompleter(srv.url, "m", timeout=0.2, max_retries=1, backoff_s=0.01)
        start = time.monotonic()
        with pytest.raises(CompletionError, match=r"after 2 attempt\(s\).*timed out"):
            completer.complete(converted[0], 1, "reasoner")
        assert time.monotonic() - start < 1.5
    assert len(srv.requests) == 2


def test_connection_refused_is_a_completion_error(converted):
    with _Server([(200, chat("x"), 0)]) as srv:
        url = srv.url
    with pytest.raises(CompletionError, match="failed after 1 attempt"):
        OpenAICompatibleCompleter(url, "m", max_retries=0).complete(converted[0], 1, "reasoner")


# ------------------------------------------------------------------------------ a tiny local model
def _char_tokenizer(vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
    chars = [chr(c) for c in range(32, 127)]
    extra = [f"<w{i}>" for i in range(vocab_size - len(specials) - len(chars))]
    vocab = {tok: i for i, tok in enumerate(specials + chars + extra)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]",
                                   eos_token="[EOS]", unk_token="[UNK]")


def test_hf_completer_on_a_tiny_model(converted, tiny_model_factory):
    from conftest import VOCAB

    tokenizer = _char_tokenizer(VOCAB)
    assert tokenizer.decode(tokenizer("ab c")["input_ids"]) == "ab c"
    model = tiny_model_factory("llama")
    completer = HFCompleter(model, tokenizer, max_new_tokens=6, max_prompt_tokens=96, min_new_tokens=6,
                            suppress_tokens=[0, 1, 2, 3])
    text = completer.complete(converted[0], 1, "reasoner")
    assert isinstance(text, str) and text
    done = complete_trajectory(converted[0], completer)
    assert PLACEHOLDER not in [t.content for t in done.turns] and done.meta["completed_by"] == "HFCompleter"
