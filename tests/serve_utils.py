"""Run `transformers serve` on a local model folder for tests: a real OpenAI-compatible endpoint on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
