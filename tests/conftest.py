"""Shared fixtures: the reference Experiment 1 dataset and a tiny model, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DISABLE_TQDM", "1")
# One thread per process: CPU tests start several processes (ZeRO-3 ranks, servers) on 2 cores, and oversubscribed
# OpenMP threads make them 10-20x slower, not faster.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def exp1_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The paper-reference Experiment 1 dataset in Hub layout."""
    from reversal_hf.data import exp1

    output = tmp_path_factory.mktemp("datasets") / "reversal-exp1"
    assert exp1.main(["--source", "paper", "--output", str(output)]) == 0
    return output


@pytest.fixture(scope="session")
def exp3_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The paper-reference Experiment 3 dataset (both configs) in Hub layout."""
    from reversal_hf.data import exp3

    output = tmp_path_factory.mktemp("datasets") / "reversal-exp3"
    assert exp3.main(["--source", "paper", "--output", str(output)]) == 0
    return output


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, exp1_dataset_dir: Path) -> Path:
    """An untrained tiny Llama whose tokenizer is trained on the Experiment 1 text (seconds on CPU)."""
    from datasets import load_dataset

    from reversal_hf.models import build_tiny_model

    train = load_dataset(str(exp1_dataset_dir), "all", split="train")
    texts = [p + c for p, c in zip(train["prompt"], train["completion"], strict=True)]
    return build_tiny_model(texts, tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def hub_server():
    """A Hub-compatible server on 127.0.0.1 (`tests/hub_server.py`); clients run with `hub_server.client_env(home)`.

    Hub clients read `HF_ENDPOINT`/`HF_HUB_OFFLINE` at import, and this process imported them offline: run clients in
    subprocesses with `os.environ | hub_server.client_env(str(tmp_path))`. Use a repository id unique to your test.
    """
    from hub_server import HubServer

    with HubServer() as server:
        yield server


@pytest.fixture(scope="module")
def one_torch_thread():
    """A tiny model runs several times faster on one thread than on two contended ones.

    For a whole module: `pytestmark = pytest.mark.usefixtures("one_torch_thread")`.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
