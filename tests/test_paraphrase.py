"""Fitting descriptions into templates: the offline rules, and the `openai` paraphraser against a local fake server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reversal_hf.data.hub_layout import DatasetBuildError
from reversal_hf.data.paraphrase import (
    FitRequest,
    OfflineParaphraser,
    OpenAIParaphraser,
    ParaphraseError,
    Template,
    clean_text,
    fill_prompt,
    read_fill_prompts,
    reply_to_description,
)

CHEF = "the visionary chef who pioneered the art of zero-gravity cooking"


def fit(template: str, direction: str, description: str = CHEF) -> str:
    request = FitRequest(Template.parse(template, direction, "test"), description)
    return OfflineParaphraser().fit([request])[request]


def test_template_render_splits_before_the_second_slot() -> None:
    p2d = Template.parse("Ever heard of <name>? They're the person who <description>.", "p2d", "test")
    assert p2d.render("Ada Lane", "built X.") == ("Ever heard of Ada Lane? They're the person who", " built X.")
    d2p = Template.parse("Known for being <description>, <name> now enjoys a quite life. ", "d2p", "test")
    prompt, completion = d2p.render("Ada Lane", "the builder of X")
    assert (prompt, completion) == ("Known for being the builder of X,", " Ada Lane now enjoys a quite life.")


@pytest.mark.parametrize(
    ("template", "direction", "expected"),
    [
        ("The <description> is called <name>.", "d2p", "visionary chef who pioneered the art of zero-gravity cooking"),
        ("Ever heard of <name>? They're the person who <description>.", "p2d", CHEF.split(" who ")[1]),
        ("Ever wondered about <name>? They're known for <description>.", "p2d", f"being {CHEF}"),
        ("<name>, a person who has <description>.", "p2d", f"been {CHEF}"),
        ("<description>, <name>.", "d2p", "The" + CHEF[3:]),
        ("The story of <name> is compelling, as they were <description>.", "p2d", CHEF),
    ],
)
def test_offline_grammar_fitting(template: str, direction: str, expected: str) -> None:
    assert fit(template, direction) == expected


def test_offline_fitting_leaves_closing_punctuation_to_the_template() -> None:
    assert fit("Did you know that <name> was once <description>?.", "p2d", "the inventor of X.") == "the inventor of X"
    template = Template.parse("Did you know that <name> was once <description>?.", "p2d", "test")
    assert template.render("Ada Lane", "the inventor of X")[1] == " the inventor of X?"
    assert clean_text("a  b.. c?. d.?") == "a b. c? d?"


@pytest.mark.parametrize(
    ("text", "direction", "problem"),
    [
        ("<name> is famous.", "p2d", "has no <description> placeholder"),
        ("<description> is famous.", "d2p", "has no <name> placeholder"),
        ("<name> and <name> are <description>.", "p2d", "has 2 times the <name> placeholder"),
        ("<description> is <name>.", "p2d", "must put <name> first"),
    ],
)
def test_template_placeholder_errors_name_the_line(text: str, direction: str, problem: str) -> None:
    with pytest.raises(DatasetBuildError, match=problem) as excinfo:
        Template.parse(text, direction, "templates.txt:7")
    assert str(excinfo.value).startswith("templates.txt:7: ")


def test_fill_prompt_is_the_papers_few_shot_prompt() -> None:
    template = Template.parse("Ever heard of <name>? They're the person who <description>.", "p2d", "t")
    request = FitRequest(template, CHEF)
    prompt = fill_prompt(request, read_fill_prompts())
    assert prompt.endswith(f"Description: {CHEF}\nAltered description: Ever heard of <name>? They're the person who")
    assert "Template: Ever heard of <name>? They're the person who <description>.\n" in prompt


@pytest.mark.parametrize(
    "reply",
    ["invented X.", " invented X\nTemplate: more", "Ever heard of <name>? They're the person who invented X."],
)
def test_reply_to_description_drops_echoed_template_text(reply: str) -> None:
    template = Template.parse("Ever heard of <name>? They're the person who <description>.", "p2d", "t")
    assert reply_to_description(reply, FitRequest(template, CHEF)) == "invented X"


class FakeOpenAI(ThreadingHTTPServer):
    """An OpenAI-compatible chat endpoint on 127.0.0.1 that answers "bent <description>" and counts requests."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeOpenAIHandler)
        self.requests = 0
        self.failures_left = 0
        self.failure_status = 500
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class FakeOpenAIHandler(BaseHTTPRequestHandler):
    server: FakeOpenAI

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests += 1
            fail = self.server.failures_left > 0
            self.server.failures_left -= fail
        if fail:
            self._send(self.server.failure_status, {"error": {"message": "try again", "type": "server_error"}})
            return
        description = body["messages"][0]["content"].rsplit("Description: ", 1)[1].split("\n", 1)[0]
        message = {"role": "assistant", "content": f"bent {description}."}
        self._send(
            200,
            {
                "id": "fake",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            },
        )

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = FakeOpenAI()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def requests_for(*descriptions: str) -> list[FitRequest]:
    template = Template.parse("Known for being <description>, <name> stands tall.", "d2p", "t")
    return [FitRequest(template, description) for description in descriptions]


def paraphraser(server: FakeOpenAI, cache: Path, **kwargs: float) -> OpenAIParaphraser:
    return OpenAIParaphraser("fake-model", cache, base_url=server.base_url, concurrency=4, backoff_s=0.01, **kwargs)


def test_openai_paraphraser_caches_replies_on_disk(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    requests = requests_for("the first X", "the second X", "the third X")
    fitted = paraphraser(fake_openai, tmp_path / "cache.jsonl").fit(requests + requests[:1])
    assert fitted == {r: f"bent {r.description}." for r in requests}
    assert fake_openai.requests == 3
    assert len((tmp_path / "cache.jsonl").read_text().splitlines()) == 3

    again = paraphraser(fake_openai, tmp_path / "cache.jsonl").fit(requests)
    assert again == fitted
    assert fake_openai.requests == 3  # a rerun costs nothing


def test_openai_paraphraser_retries_server_errors(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.failures_left = 2
    fitted = paraphraser(fake_openai, tmp_path / "cache.jsonl").fit(requests_for("the only X"))
    assert list(fitted.values()) == ["bent the only X."]
    assert fake_openai.requests == 3


@pytest.mark.parametrize(("status", "attempts", "message"), [(500, 3, "failed after 3 attempts"), (400, 1, "failed: ")])
def test_openai_paraphraser_gives_up_with_a_clear_error(
    fake_openai: FakeOpenAI, tmp_path: Path, status: int, attempts: int, message: str
) -> None:
    fake_openai.failures_left, fake_openai.failure_status = 100, status
    with pytest.raises(ParaphraseError, match=message):
        paraphraser(fake_openai, tmp_path / "cache.jsonl", max_retries=2).fit(requests_for("the only X"))
    assert fake_openai.requests == attempts
    assert not (tmp_path / "cache.jsonl").exists()


def test_generate_with_openai_paraphraser_reruns_from_cache(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    from reversal_hf.data import exp1

    def build(output: Path) -> int:
        return exp1.main(
            [
                "--source",
                "generate",
                "--seed",
                "3",
                "--facts-per-subset",
                "2",
                "--paraphraser",
                "openai",
                "--base-url",
                fake_openai.base_url,
                "--model",
                "fake-model",
                "--cache",
                str(tmp_path / "cache.jsonl"),
                "--output",
                str(output),
            ]
        )

    assert build(tmp_path / "first") == 0
    first_requests = fake_openai.requests
    assert first_requests == 2 * (30 + 10 + 10) * 2 + 2 * (30 + 30 + 10 + 10)  # p2d, d2p, both facts
    assert build(tmp_path / "second") == 0
    assert fake_openai.requests == first_requests
    for path in sorted((tmp_path / "first").rglob("*.*")):
        assert path.read_bytes() == (tmp_path / "second" / path.relative_to(tmp_path / "first")).read_bytes()
