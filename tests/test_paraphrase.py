"""Fitting descriptions into templates: the offline rules, and the `openai` paraphraser against a scripted endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_utils import ScriptedChatEndpoint, scripted_chat_endpoint

from reversal_hf.data.hub_layout import DatasetBuildError
from reversal_hf.data.paraphrase import (
    FitRequest,
    OfflineParaphraser,
    OpenAIParaphraser,
    Template,
    clean_text,
    fill_prompt,
    read_fill_prompts,
    reply_to_description,
)
from reversal_hf.openai_api import OpenAIAPIError

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


def bent_description(body: dict) -> list[str]:
    """The fake paraphrasing model: "bent <description>." for the description in the prompt."""
    description = body["messages"][0]["content"].rsplit("Description: ", 1)[1].split("\n", 1)[0]
    return [f"bent {description}."]


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedChatEndpoint]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with scripted_chat_endpoint(bent_description) as server:
        yield server


def requests_for(*descriptions: str) -> list[FitRequest]:
    template = Template.parse("Known for being <description>, <name> stands tall.", "d2p", "t")
    return [FitRequest(template, description) for description in descriptions]


def paraphraser(server: ScriptedChatEndpoint, cache: Path, **kwargs: int) -> OpenAIParaphraser:
    return OpenAIParaphraser("fake-model", cache, base_url=server.base_url, concurrency=4, **kwargs)


def test_openai_paraphraser_caches_replies_on_disk(fake_openai: ScriptedChatEndpoint, tmp_path: Path) -> None:
    requests = requests_for("the first X", "the second X", "the third X")
    fitted = paraphraser(fake_openai, tmp_path / "cache.jsonl").fit(requests + requests[:1])
    assert fitted == {r: f"bent {r.description}." for r in requests}
    assert len(fake_openai.received) == 3
    assert len((tmp_path / "cache.jsonl").read_text().splitlines()) == 3

    again = paraphraser(fake_openai, tmp_path / "cache.jsonl").fit(requests)
    assert again == fitted
    assert len(fake_openai.received) == 3  # a rerun costs nothing


def test_openai_paraphraser_retries_server_errors(fake_openai: ScriptedChatEndpoint, tmp_path: Path) -> None:
    fake_openai.script = [429, 503]
    fitted = paraphraser(fake_openai, tmp_path / "cache.jsonl").fit(requests_for("the only X"))
    assert list(fitted.values()) == ["bent the only X."]
    assert len(fake_openai.received) == 3


@pytest.mark.parametrize(
    ("status", "attempts", "message"),
    [(500, 3, "did not answer after 3 attempts: HTTP 500"), (400, 1, "refused the request: HTTP 400")],
)
def test_openai_paraphraser_gives_up_with_a_clear_error(
    fake_openai: ScriptedChatEndpoint, tmp_path: Path, status: int, attempts: int, message: str
) -> None:
    fake_openai.script = [status] * 100
    with pytest.raises(OpenAIAPIError, match=f"{message} \\w+: scripted {status}$"):
        paraphraser(fake_openai, tmp_path / "cache.jsonl", max_retries=2).fit(requests_for("the only X"))
    assert len(fake_openai.received) == attempts
    assert not (tmp_path / "cache.jsonl").exists()


def test_generate_with_openai_paraphraser_reruns_from_cache(fake_openai: ScriptedChatEndpoint, tmp_path: Path) -> None:
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
    first_requests = len(fake_openai.received)
    assert first_requests == 2 * (30 + 10 + 10) * 2 + 2 * (30 + 30 + 10 + 10)  # p2d, d2p, both facts
    assert build(tmp_path / "second") == 0
    assert len(fake_openai.received) == first_requests
    for path in sorted((tmp_path / "first").rglob("*.*")):
        assert path.read_bytes() == (tmp_path / "second" / path.relative_to(tmp_path / "first")).read_bytes()
