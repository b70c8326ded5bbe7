"""`reversal-hf openai finetune|sweep <recipe>`: check the data, show the cost, then upload, create and follow jobs.

`--dry-run` prints each run's training-file stats, token estimate and job request without any request. Creating a
job is paid for, so it needs `--yes`; attaching to a job the run folder already created does not. Ctrl-C while
following asks whether to cancel the remote job; otherwise it keeps running and the same command attaches to it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from reversal_hf.command import CommandFailed, print_error, run_command
from reversal_hf.configs import RecipeError
from reversal_hf.files import FileFormatError
from reversal_hf.launch import split_overrides
from reversal_hf.openai_api import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_S, OpenAIAPIError, make_client, one_line_errors
from reversal_hf.openai_arm import jobs
from reversal_hf.openai_arm.data import TrainingDataError
from reversal_hf.openai_arm.recipe import load_runs

if TYPE_CHECKING:
    import openai

INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reversal-hf openai",
        allow_abbrev=False,
        description="Finetune OpenAI models on our datasets. Arguments after `--` override recipe fields.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_ in [
        ("finetune", "one recipe: upload, create the job, follow it to the end"),
        ("sweep", "every grid point and seed of a sweep recipe: create all jobs, then follow each"),
    ]:
        command = commands.add_parser(name, help=help_, allow_abbrev=False)
        command.add_argument("recipe", help="recipe name in recipes/ (e.g. openai_exp1_davinci002) or a YAML path")
        command.add_argument("--dry-run", action="store_true", help="print stats, tokens and requests; no network")
        command.add_argument("--yes", action="store_true", help="confirm creating (paying for) new jobs")
        command.add_argument("--base-url", help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL, else OpenAI)")
        command.add_argument("--max-retries", type=int, default=DEFAULT_MAX_RETRIES, help="the client's retries")
        command.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per request")
        command.add_argument("--poll-interval", type=float, default=30.0, help="seconds between status polls")
    return parser


def _confirm(question: str) -> bool:
    try:
        return input(question).strip().lower() in {"y", "yes"}
    except EOFError:
        return False


def _follow_all(
    client: openai.OpenAI, pending: list[jobs.PreparedRun], job_ids: list[str], poll_interval_s: float
) -> None:
    """Follow each job to its end; a failed one is an `error:` line and the others are still followed."""
    failures = 0
    for prepared, job_id in zip(pending, job_ids, strict=True):
        try:
            job, train_loss = jobs.follow(client, job_id, poll_interval_s=poll_interval_s)
        except KeyboardInterrupt:
            if _confirm(f"\ncancel the remote job {job_id}? [y/N] "):
                client.fine_tuning.jobs.cancel(job_id)
                print(f"cancelled {job_id}", file=sys.stderr)
            else:
                print(f"{job_id} keeps running; run the same command again to attach to it", file=sys.stderr)
            raise CommandFailed(exit_status=INTERRUPTED) from None
        try:
            jobs.check_succeeded(job, prepared.output_dir)
        except jobs.FinetuneError as error:
            print_error(str(error))
            failures += 1
            continue
        run_info = jobs.write_run_info(prepared, job, train_loss)
        print(f"{prepared.output_dir}: {run_info['fine_tuned_model']}")
    if failures:
        raise CommandFailed()  # each failed job has had its `error:` line


def run(args: argparse.Namespace, overrides: list[str]) -> None:
    runs = load_runs(args.recipe, overrides)
    if args.command == "finetune" and len(runs) > 1:
        raise RecipeError(f"{args.recipe} is a sweep of {len(runs)} runs: use `reversal-hf openai sweep`")
    pending = []
    for run in runs:
        if jobs.is_finished(run):
            print(f"{run.recipe}: {run.output_dir} finished, skipped")
            continue
        pending.append(jobs.prepare(run))
        print(pending[-1].summary())
    if args.dry_run or not pending:
        return
    new_jobs = [prepared for prepared in pending if jobs.recorded_job(prepared) is None]
    if new_jobs and not args.yes:
        raise CommandFailed(f"{len(new_jobs)} new fine-tuning job(s) would be paid for: add --yes")
    client = make_client(args.base_url, max_retries=args.max_retries, timeout_s=args.timeout)
    with one_line_errors(client):
        job_ids = [jobs.start(client, prepared) for prepared in pending]
        _follow_all(client, pending, job_ids, args.poll_interval)


def main(argv: list[str] | None = None) -> int:
    command_argv, overrides = split_overrides(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(command_argv)
    errors = (RecipeError, TrainingDataError, FileFormatError, OpenAIAPIError, jobs.FinetuneError)
    try:
        return run_command(lambda: run(args, overrides), errors, done=None)
    except KeyboardInterrupt:  # before following: what the API already returned is in the run folder's state file
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return INTERRUPTED
