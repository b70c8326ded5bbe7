"""An OpenAI-compatible fine-tuning server for tests: the real `openai` client uploads, creates and follows jobs on it.

No OpenAI API is reachable here, so `/files`, `/fine_tuning/jobs` (create, retrieve, list with a metadata filter,
events, cancel), `/models`, `/completions` and `/chat/completions` speak the shapes of the installed SDK's types
(`openai/types/file_object.py`, `types/fine_tuning/fine_tuning_job.py`, `fine_tuning_job_event.py`,
`types/completion_choice.py`). `/completions` answers from a scripted table, or from a real model set as `model` (a
test passes a transformers model). A job moves one status per `retrieve`: `validating_files`, `queued`, `running` (one
metrics event per step), then `succeeded`, or `failed` when its file is not valid JSONL or `outcome` says so;
`hold_running` keeps it running. Every request is counted in `requests` and its `Authorization` header kept.
Only the standard library is used; requests are handled in background threads.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

BASE_MODELS = ("babbage-002", "davinci-002", "gpt-4o-mini-2024-07-18")
TOKEN_PATTERN = re.compile(r"\s*\S+|\s+")


def token_logprob(token: str) -> float:
    """The log-prob this server gives a token: -0.1 per character (deterministic, so tests can sum it)."""
    return -0.1 * len(token)


class CompletionModel(Protocol):
    """What answers `/completions`: the greedy continuation's tokens, and the prompt's tokens, each with its log-prob
    (None for the first, as in the API)."""

    def generate(self, prompt: str, max_tokens: int) -> list[tuple[str, float]]: ...

    def score(self, prompt: str) -> list[tuple[str, float | None]]: ...


class ScriptedModel:
    """The default: `completions[prompt]` (else " unknown") split at spaces, each token `token_logprob`."""

    def __init__(self, completions: dict[str, str]) -> None:
        self.completions = completions

    def generate(self, prompt: str, max_tokens: int) -> list[tuple[str, float]]:
        tokens = TOKEN_PATTERN.findall(self.completions.get(prompt, " unknown"))[:max_tokens]
        return [(token, token_logprob(token)) for token in tokens]

    def score(self, prompt: str) -> list[tuple[str, float | None]]:
        tokens = TOKEN_PATTERN.findall(prompt)
        return [(token, None if index == 0 else token_logprob(token)) for index, token in enumerate(tokens)]


def _error(status: int, message: str, param: str | None = None) -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}


def _page(items: list[dict], query: dict[str, str]) -> dict:
    """A cursor page (`SyncCursorPage`): items after the `after` id, at most `limit`."""
    if "after" in query:
        ids = [item["id"] for item in items]
        items = items[ids.index(query["after"]) + 1 :] if query["after"] in ids else []
    limit = int(query.get("limit", 20))
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}


class OpenAIFinetuneServer(ThreadingHTTPServer):
    """The server; read `files`, `jobs`, `requests`, `authorizations` in tests (under `lock` while it runs)."""

    def __init__(self, *, steps: int = 3) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.steps = steps
        self.outcome = "succeeded"
        self.hold_running = False
        self.completions: dict[str, str] = {}  # prompt -> the greedy continuation `/completions` returns
        self.model: CompletionModel | None = None  # a real model answers `/completions` instead, when set
        self.files: dict[str, dict] = {}
        self.contents: dict[str, bytes] = {}
        self.jobs: dict[str, dict] = {}
        self.events: dict[str, list[dict]] = {}
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str] = []
        self.lock = threading.Lock()
        self._ids = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def count(self, method: str, path: str) -> int:
        """Requests received with this method and exactly this path (below `/v1`)."""
        with self.lock:
            return sum(1 for received in self.requests if received == (method, path))

    def _new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self._ids:06d}"

    def _event(self, job: dict, message: str, *, level: str = "info", data: dict | None = None) -> None:
        event = {
            "id": self._new_id("ftevent"),
            "object": "fine_tuning.job.event",
            "created_at": int(time.time()),
            "level": level,
            "message": message,
            "data": data or {},
            "type": "metrics" if data else "message",
        }
        self.events[job["id"]].insert(0, event)  # the API lists the newest first

    # --- routes -------------------------------------------------------------------------------------------------

    def upload(self, content_type: str, body: bytes) -> tuple[int, dict]:
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        fields = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
        if "file" not in fields or "purpose" not in fields:
            return _error(400, "file and purpose are required")
        content = fields["file"].get_payload(decode=True)
        purpose = fields["purpose"].get_payload(decode=True).decode()
        file_object = {
            "id": self._new_id("file"),
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": fields["file"].get_filename(),
            "purpose": purpose,
            "status": "processed",
        }
        self.files[file_object["id"]] = file_object
        self.contents[file_object["id"]] = content
        return 200, file_object

    def create_job(self, body: dict) -> tuple[int, dict]:
        if body.get("training_file") not in self.files:
            return _error(400, f"invalid training_file: {body.get('training_file')}", "training_file")
        supervised = body.get("method", {}).get("supervised", {}).get("hyperparameters", {})
        hyperparameters = {
            key: supervised.get(key, "auto") for key in ("batch_size", "learning_rate_multiplier", "n_epochs")
        }
        job = {
            "id": self._new_id("ftjob"),
            "object": "fine_tuning.job",
            "created_at": int(time.time()),
            "error": None,
            "fine_tuned_model": None,
            "finished_at": None,
            "hyperparameters": hyperparameters,
            "model": body["model"],
            "organization_id": "org-test",
            "result_files": [],
            "seed": body.get("seed", 0),
            "status": "validating_files",
            "trained_tokens": None,
            "training_file": body["training_file"],
            "validation_file": None,
            "metadata": body.get("metadata"),
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
            "suffix": body.get("suffix"),  # kept for the tests; not part of the API's job object
        }
        self.jobs[job["id"]] = job
        self.events[job["id"]] = []
        self._event(job, f"Created fine-tuning job: {job['id']}")
        return 200, job

    def _file_is_valid(self, file_id: str) -> bool:
        try:
            lines = [json.loads(line) for line in self.contents[file_id].decode().splitlines()]
        except (UnicodeDecodeError, json.JSONDecodeError):
            return False
        return len(lines) >= 10 and all(isinstance(line, dict) for line in lines)

    def advance(self, job: dict) -> None:
        """One step of the job's life, taken at each retrieve."""
        if job["status"] == "validating_files":
            if self.outcome == "failed" or not self._file_is_valid(job["training_file"]):
                job.update(status="failed", finished_at=int(time.time()))
                job["error"] = {
                    "code": "invalid_training_file",
                    "message": "The job failed\nvalidation.",
                    "param": "training_file",
                }
                self._event(job, "The job failed due to an invalid training file.", level="error")
            else:
                job["status"] = "queued"
                self._event(job, "Validated training file")
        elif job["status"] == "queued":
            job["status"] = "running"
            self._event(job, "Fine-tuning job started")
        elif job["status"] == "running" and not self.hold_running:
            done = sum(1 for event in self.events[job["id"]] if event["type"] == "metrics")
            if done < self.steps:
                data = {"step": done + 1, "total_steps": self.steps, "train_loss": 1.0 / (done + 1)}
                self._event(job, f"Step {done + 1}/{self.steps}: training loss={data['train_loss']:.4f}", data=data)
            else:
                suffix = job["suffix"] or ""
                job.update(
                    status="succeeded",
                    finished_at=job["created_at"] + 7,
                    trained_tokens=1234,
                    fine_tuned_model=f"ft:{job['model']}:org-test:{suffix}:{job['id'][-6:]}",
                    result_files=[self._new_id("file")],
                )
                self._event(job, "The job has successfully completed")

    def cancel(self, job: dict) -> tuple[int, dict]:
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            return _error(400, f"Job {job['id']} has already completed")
        job.update(status="cancelled", finished_at=int(time.time()))
        self._event(job, "Fine-tuning job cancelled")
        return 200, job

    def complete(self, body: dict) -> tuple[int, dict]:
        """`/completions` for one string prompt: the model's greedy continuation, with `echo` and `logprobs` as asked.

        Log-probs come with `echo` only (all the evaluators ask for): the prompt's tokens, then the continuation's.
        """
        if body.get("logprobs") is not None and not body.get("echo"):
            return _error(400, "this test server gives logprobs only with echo", "logprobs")
        model = self.model or ScriptedModel(self.completions)
        prompt = body["prompt"]
        generated = model.generate(prompt, body.get("max_tokens", 16))
        text = "".join(token for token, _ in generated)
        choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": "length", "logprobs": None}
        if body.get("echo"):
            choice["text"] = prompt + text
        if body.get("logprobs") is not None:
            tokens, logprobs = zip(*model.score(prompt), *generated, strict=True)
            choice["logprobs"] = {
                "tokens": list(tokens),
                "token_logprobs": list(logprobs),
                "text_offset": [sum(map(len, tokens[:index])) for index in range(len(tokens))],
                "top_logprobs": None,
            }
        return 200, {
            "id": self._new_id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [choice],
        }

    def chat(self, body: dict) -> tuple[int, dict]:
        prompt = body["messages"][-1]["content"]
        text = self.completions.get(prompt, " unknown").strip()
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        return 200, {
            "id": self._new_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [choice],
        }

    def models(self) -> list[dict]:
        names = [*BASE_MODELS, *(job["fine_tuned_model"] for job in self.jobs.values() if job["fine_tuned_model"])]
        return [{"id": name, "object": "model", "created": 0, "owned_by": "test"} for name in names]

    def route(self, method: str, path: str, query: dict[str, str], headers, body: bytes) -> tuple[int, dict]:
        parts = path.removeprefix("/v1/").split("/")
        if method == "POST" and parts == ["files"]:
            return self.upload(headers["Content-Type"], body)
        if method == "GET" and parts == ["files"]:
            found = [f for f in self.files.values() if query.get("purpose") in (None, f["purpose"])]
            return 200, _page(found[::-1], query)
        if method == "POST" and parts == ["fine_tuning", "jobs"]:
            return self.create_job(json.loads(body))
        if method == "GET" and parts == ["fine_tuning", "jobs"]:
            wanted = {key[len("metadata[") : -1]: value for key, value in query.items() if key.startswith("metadata[")}
            found = [
                job
                for job in self.jobs.values()
                if all((job["metadata"] or {}).get(key) == value for key, value in wanted.items())
            ]
            return 200, _page(found[::-1], query)
        if parts[:2] == ["fine_tuning", "jobs"] and len(parts) >= 3:
            job = self.jobs.get(parts[2])
            if job is None:
                return _error(404, f"Could not find fine-tune: {parts[2]}")
            if method == "GET" and len(parts) == 3:
                self.advance(job)
                return 200, job
            if method == "GET" and parts[3:] == ["events"]:
                return 200, _page(self.events[job["id"]], query)
            if method == "POST" and parts[3:] == ["cancel"]:
                return self.cancel(job)
        if method == "GET" and parts == ["models"]:
            return 200, {"object": "list", "data": self.models()}
        if method == "GET" and parts[0] == "models" and len(parts) == 2:
            found = [model for model in self.models() if model["id"] == parts[1]]
            return (200, found[0]) if found else _error(404, f"The model '{parts[1]}' does not exist")
        if method == "POST" and parts == ["completions"]:
            return self.complete(json.loads(body))
        if method == "POST" and parts == ["chat", "completions"]:
            return self.chat(json.loads(body))
        return _error(404, f"no route {method} {path}")


class _Handler(BaseHTTPRequestHandler):
    server: OpenAIFinetuneServer

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.requests.append((method, url.path.removeprefix("/v1")))
            self.server.authorizations.append(self.headers.get("Authorization", ""))
            status, payload = self.server.route(method, url.path, dict(parse_qsl(url.query)), self.headers, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def running_server(**kwargs: Any) -> Iterator[OpenAIFinetuneServer]:
    """A started `OpenAIFinetuneServer`, shut down on exit."""
    server = OpenAIFinetuneServer(**kwargs)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
