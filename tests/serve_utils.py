"""OpenAI-compatible endpoints on 127.0.0.1 for tests: `transformers serve` on a local model folder (a real server),
and `ScriptedChatEndpoint` (failures on cue, which a real server does not give). Both count what they receive."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# A plain "role: content" transcript; the tiny test tokenizers ship without a chat template, which serve requires.
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
CHAT_COMPLETIONS_LOG_LINE = '"POST /v1/chat/completions HTTP'


@dataclass(frozen=True)
class ServedModel:
    """A running server: its base URL, the `model` name requests must carry, and its access log."""

    base_url: str
    model: str
    log_path: Path

    def chat_requests(self) -> int:
        """Chat-completion requests the server has received so far (from uvicorn's access log)."""
        return self.log_path.read_text(errors="replace").count(CHAT_COMPLETIONS_LOG_LINE)


def with_chat_template(model_dir: Path, output_dir: Path, template: str = PLAIN_CHAT_TEMPLATE) -> Path:
    """A copy of `model_dir` whose tokenizer has `template` as its chat template."""
    from transformers import AutoTokenizer

    shutil.copytree(model_dir, output_dir)
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(output_dir)
    return output_dir


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_ready(process: subprocess.Popen, url: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"transformers serve exited with {process.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise RuntimeError(f"transformers serve not ready at {url} after {timeout_s:.0f}s:\n{log_path.read_text()[-2000:]}")


@contextmanager
def serve_model(model_dir: Path, log_path: Path, timeout_s: float = 180.0) -> Iterator[ServedModel]:
    """Start `transformers serve <model_dir>` on CPU at 127.0.0.1:<free port>; stop it on exit.

    The folder is the forced model, loaded at start-up, so `/health` answering means requests can be served; requests
    must name the folder path as their `model`.
    """
    executable = Path(sys.executable).with_name("transformers")
    command = [str(executable), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port := free_port())]
    command += ["--device", "cpu", "--log-level", "info"]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_until_ready(process, f"http://127.0.0.1:{port}/health", log_path, timeout_s)
        yield ServedModel(f"http://127.0.0.1:{port}/v1", str(model_dir), log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def numbered_answers(body: dict) -> list[str]:
    """One choice per requested `n`: "Answer 0", "Answer 1", ..."""
    return [f"Answer {index}" for index in range(body.get("n", 1))]


class ScriptedChatEndpoint(ThreadingHTTPServer):
    """A chat-completions endpoint that first answers the HTTP statuses in `script`, one per request, then 200.

    A 200 carries one choice per text of `reply(request body)`. A scripted failure carries `{"error": {"message":
    "scripted <status>"}}` and `retry-after-ms: 1`, so the client's retries take no time; status 0 means: hang for
    `hang_s` seconds, then answer 200. Every request body is kept in `received`, in arrival order.
    """

    def __init__(self, reply: Callable[[dict], list[str]] = numbered_answers, hang_s: float = 1.0) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.reply = reply
        self.hang_s = hang_s
        self.script: list[int] = []
        self.received: list[dict] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def next_status(self, body: dict) -> int:
        with self.lock:
            self.received.append(body)
            return self.script.pop(0) if self.script else 200


class _ScriptedHandler(BaseHTTPRequestHandler):
    server: ScriptedChatEndpoint

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = self.server.next_status(body)
        if status == 0:
            time.sleep(self.server.hang_s)
            status = 200
        if status == 200:
            choices = [
                {"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                for index, text in enumerate(self.server.reply(body))
            ]
            payload = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": choices}
        else:
            payload = {"error": {"message": f"scripted {status}", "type": "scripted"}}
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status != 200:
                self.send_header("retry-after-ms", "1")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and hung up
            pass

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def scripted_chat_endpoint(reply: Callable[[dict], list[str]] = numbered_answers) -> Iterator[ScriptedChatEndpoint]:
    """A running `ScriptedChatEndpoint`; stopped on exit."""
    server = ScriptedChatEndpoint(reply)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
