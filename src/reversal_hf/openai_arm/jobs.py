"""One fine-tuning job from training file to `run_info.json`: upload, create, follow, and resume after a kill.

The run folder keeps `training_file.jsonl` (what was uploaded), `openai_job.json` (the uploaded file's id, then the
job's id, each written as soon as the API returns it) and, once the job succeeded, `run_info.json` (written last, so
its presence marks a finished run). Running again attaches to the recorded job. A run killed between the API's answer
and the state file finds its file again by name and size, and its job by the `reversal_hf_run` metadata key (a hash
of the job request, the training file and the run folder), so nothing is uploaded or paid for twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from reversal_hf import files, run_folder
from reversal_hf.openai_arm.data import CHARS_PER_TOKEN, TrainingFile, build_training_file
from reversal_hf.openai_arm.recipe import OpenAIRun

if TYPE_CHECKING:
    import openai
    from openai.types.fine_tuning import FineTuningJob

STATE_FILE = "openai_job.json"
TRAINING_FILE = "training_file.jsonl"
RUN_KEY = "reversal_hf_run"  # the job's metadata key that finds it again
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
EVENTS_PER_POLL = 100


class FinetuneError(RuntimeError):
    """A job failed or was cancelled, or a run folder belongs to another job (one line)."""


@dataclass(frozen=True)
class PreparedRun:
    """A run with its checked training file: everything needed to upload and create the job."""

    run: OpenAIRun
    training: TrainingFile

    @property
    def output_dir(self) -> Path:
        return self.run.output_dir

    @property
    def filename(self) -> str:
        """The uploaded file's name: recipe and content hash, so a lost upload is found again."""
        return f"{self.run.recipe}-{self.training.sha256[:16]}.jsonl"

    def job_request(self, training_file_id: str) -> dict[str, Any]:
        """`fine_tuning.jobs.create` keywords: the recipe's model, hyperparameters, seed and suffix."""
        args = self.run.args
        request = {
            "model": args.model,
            "training_file": training_file_id,
            "method": {"type": "supervised", "supervised": {"hyperparameters": args.hyperparameters()}},
            "seed": args.seed,
            "metadata": {RUN_KEY: self.run_key},
        }
        return request | ({"suffix": args.suffix} if args.suffix else {})

    @property
    def run_key(self) -> str:
        args = self.run.args
        identity = [
            args.model,
            args.hyperparameters(),
            args.seed,
            args.suffix,
            self.training.sha256,
            str(self.output_dir),
        ]
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]

    def summary(self) -> str:
        """What would be uploaded and paid for: the file's stats, the token estimate and the job request."""
        training, epochs = self.training, self.run.args.n_epochs
        return "\n".join(
            [
                f"{self.run.recipe}: {self.output_dir}",
                f"  training file: {len(training.examples)} examples ({training.data_format}), "
                f"{len(training.content)} bytes, sha256 {training.sha256[:16]}",
                f"  trained tokens (estimate, UTF-8 bytes / {CHARS_PER_TOKEN}): {training.estimated_tokens} per epoch "
                f"x {epochs} epochs = {training.estimated_trained_tokens(epochs)}",
                f"  longest example: at most {training.max_example_tokens} tokens "
                f"(limit {self.run.args.max_example_tokens})",
                f"  job request: {json.dumps(self.job_request('<uploaded file id>'))}",
            ]
        )


def prepare(run: OpenAIRun) -> PreparedRun:
    """Load and check the run's training file (no network)."""
    return PreparedRun(run, build_training_file(run.args))


def is_finished(run: OpenAIRun) -> bool:
    """Whether the run folder holds this run's `run_info.json`; one of other settings is an error, not a skip."""
    run_info = run_folder.read_run_info(run.output_dir)
    if run_info is None:
        return False
    if run_info.get("resolved_config") != run.resolved_config():
        raise FinetuneError(f"{run.output_dir} holds a finished run of other settings: choose another output_dir")
    return True


def read_state(output_dir: Path) -> dict[str, Any]:
    path = output_dir / STATE_FILE
    return files.read_json(path) if path.is_file() else {}


def recorded_job(prepared: PreparedRun) -> str | None:
    """The job this run folder already created, if any; a folder made for other data or settings is an error."""
    state = read_state(prepared.output_dir)
    if state and state.get("run_key") != prepared.run_key:
        raise FinetuneError(
            f"{prepared.output_dir / STATE_FILE} belongs to another job (other data or settings); "
            "choose another output_dir or remove the folder"
        )
    return state.get("job_id")


def _save_state(prepared: PreparedRun, **fields: Any) -> None:
    state = read_state(prepared.output_dir) | {"run_key": prepared.run_key, **fields}
    files.write_json(prepared.output_dir / STATE_FILE, state)


def _find_uploaded_file(client: openai.OpenAI, prepared: PreparedRun) -> str | None:
    for uploaded in client.files.list(purpose="fine-tune"):
        same = uploaded.filename == prepared.filename and uploaded.bytes == len(prepared.training.content)
        if same and uploaded.status != "error":
            return uploaded.id
    return None


def _find_job(client: openai.OpenAI, prepared: PreparedRun) -> str | None:
    """A job this run created whose id was never recorded; failed and cancelled ones are left for a new try."""
    for job in client.fine_tuning.jobs.list(metadata={RUN_KEY: prepared.run_key}):
        if (job.metadata or {}).get(RUN_KEY) == prepared.run_key and job.status not in {"failed", "cancelled"}:
            return job.id
    return None


def start(client: openai.OpenAI, prepared: PreparedRun) -> str:
    """The run's job id: the recorded or found job, else a new job on the uploaded (or newly uploaded) file."""
    job_id = recorded_job(prepared) or _find_job(client, prepared)
    if job_id is None:
        files.write_atomically(
            prepared.output_dir / TRAINING_FILE, lambda tmp: tmp.write_bytes(prepared.training.content)
        )
        file_id = read_state(prepared.output_dir).get("training_file") or _find_uploaded_file(client, prepared)
        if file_id is None:
            upload = (prepared.filename, prepared.training.content, "application/jsonl")
            file_id = client.files.create(file=upload, purpose="fine-tune").id
            tqdm.write(f"uploaded {prepared.filename} as {file_id}")
        _save_state(prepared, training_file=file_id, training_file_sha256=prepared.training.sha256)
        job_id = client.fine_tuning.jobs.create(**prepared.job_request(file_id)).id
        tqdm.write(f"created fine-tuning job {job_id}")
    else:
        tqdm.write(f"attached to fine-tuning job {job_id}")
    _save_state(prepared, job_id=job_id)
    return job_id


def follow(client: openai.OpenAI, job_id: str, *, poll_interval_s: float) -> tuple[FineTuningJob, float | None]:
    """Poll the job until it ends, printing its events and its training steps; returns it and its last train loss."""
    seen: set[str] = set()
    train_loss = None
    with tqdm(desc=job_id, unit="step") as progress:
        while True:
            job = client.fine_tuning.jobs.retrieve(job_id)
            events = client.fine_tuning.jobs.list_events(job_id, limit=EVENTS_PER_POLL).data
            for event in reversed(events):  # the API lists the newest first
                if event.id in seen:
                    continue
                seen.add(event.id)
                metrics = event.data if event.type == "metrics" and isinstance(event.data, dict) else None
                if metrics is None:
                    tqdm.write(f"[{event.level}] {event.message}")
                    continue
                progress.total = metrics.get("total_steps", progress.total)
                progress.n = metrics.get("step", progress.n)
                train_loss = metrics.get("train_loss", train_loss)
                progress.set_postfix(train_loss=train_loss, refresh=False)
            progress.set_description(f"{job_id} {job.status}")
            if job.status in TERMINAL_STATUSES:
                return job, train_loss
            time.sleep(poll_interval_s)


def check_succeeded(job: FineTuningJob, output_dir: Path) -> None:
    """A failed or cancelled job as one line that says how to start a new one."""
    if job.status == "succeeded" and job.fine_tuned_model:
        return
    retry = f"(remove {output_dir / STATE_FILE} to start a new job)"
    if job.status == "failed":
        reason = f"{job.error.code}: {job.error.message}" if job.error else "no error given"
        raise FinetuneError(" ".join(f"fine-tuning job {job.id} failed: {reason} {retry}".split()))
    raise FinetuneError(f"fine-tuning job {job.id} ended {job.status} without a fine-tuned model {retry}")


def write_run_info(prepared: PreparedRun, job: FineTuningJob, train_loss: float | None) -> dict[str, Any]:
    """`run_info.json` like a local run's, plus the job's ids and the resulting `fine_tuned_model`."""
    args, state = prepared.run.args, read_state(prepared.output_dir)
    run_info = {
        "recipe": prepared.run.recipe,
        "experiment": args.experiment,
        "training_mode": run_folder.OPENAI_TRAINING_MODE,
        "backend": "openai",
        "model_name_or_path": args.model,
        "fine_tuned_model": job.fine_tuned_model,
        "dataset": run_folder.dataset_identity(args.dataset_name, args.dataset_revision, config=args.dataset_config),
        "seed": job.seed,
        "git_commit": run_folder.git_commit(),
        "resolved_config": prepared.run.resolved_config(),
        "train_runtime_s": job.finished_at - job.created_at if job.finished_at else None,
        "train_loss": train_loss,
        "openai": {
            "job_id": job.id,
            "training_file": state.get("training_file", job.training_file),
            "training_file_sha256": prepared.training.sha256,
            "data_format": prepared.training.data_format,
            "hyperparameters": job.hyperparameters.model_dump(),
            "trained_tokens": job.trained_tokens,
            "estimated_trained_tokens": prepared.training.estimated_trained_tokens(args.n_epochs),
            "result_files": job.result_files,
        },
    }
    run_folder.write_run_info(prepared.output_dir, run_info)
    return run_info
