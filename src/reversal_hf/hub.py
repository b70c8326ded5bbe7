"""The Hub: push a built dataset folder byte for byte and tag its version; push a run folder (a trained model) to a
branch of a model repository; fetch a pushed run back to evaluate it.

The folder is uploaded as it is (`HfApi.upload_folder`), in one commit that also deletes whatever else the repository
held, so the shards on the Hub are the very bytes `build_info.json`'s content hash covers. Before the version tag is
created, every remote file's size and hash (LFS SHA-256, or git blob id for small files) is checked against the local
file. A version tag is a promise about its rows: a tag that already holds the folder's files is left as it is (so a
`make push-data` that failed part way is finished by running it again), one that holds other files is moved only
with `force`, and a forced push says that it moved the tag. The endpoint is `HF_ENDPOINT` (read by `huggingface_hub`
at import), the token `HF_TOKEN` or the saved login.

A run folder goes to one branch (`main` unless a revision is given) in one commit that makes the branch hold exactly
the folder, so `from_pretrained(repo_id, revision=branch)` gets that run back; pushing an unchanged folder again makes
no commit. Everything a push needs is checked first (`model_push_target`: token, reachable Hub, repository id,
namespace the token may write to, branch name), so training can check it before it starts. A new branch that does
not end up holding the folder is deleted again. Each run of a sweep goes to its own branch (`sweep_revision`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, HfApi, ModelCard, RepoFile, constants, get_token, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import filter_repo_objects, httpx, validate_repo_id
from huggingface_hub.utils.sha import git_hash

from reversal_hf import run_folder
from reversal_hf.command import run_command
from reversal_hf.data.hub_layout import verified_shards
from reversal_hf.files import FileFormatError

logger = logging.getLogger(__name__)

# Dot-files and dot-folders (git, caches, editor files) are no part of a built dataset and are never uploaded.
HIDDEN_PATTERNS = [".*", "*/.*"]
GITATTRIBUTES = ".gitattributes"  # created by the Hub with the repository; `upload_folder` never deletes it
# A run folder's files that are no part of the model: checkpoints (resuming only), the in-progress record, and the
# downloaded copy's cache (`snapshot_download(local_dir=...)` keeps it under `.cache/`, hidden).
RUN_IGNORE_PATTERNS = [*HIDDEN_PATTERNS, "checkpoint-*", run_folder.RUN_START]
WRITE_ROLES = ("admin", "write", "contributor")  # an organization member's roles that may create repositories
HUB_RUN_SCHEME = "hf://"
# The model card's metadata block naming the run: what `fetch_run` checks against the pushed run_info.json.
RUN_CARD_KEY = "reversal_hf"
RUN_CARD_FIELDS = ("recipe", "run_id", "experiment", "training_mode", "seed", "git_commit", "dataset")


class HubError(RuntimeError):
    """A push or download that cannot or must not happen, or a Hub request that failed: shown as one line."""


@contextlib.contextmanager
def hub_requests(what: str) -> Iterator[None]:
    """Hub request failures inside (HTTP errors, no answer, a storage backend's connection error, an unreadable local
    file) as one-line `HubError`s that say what was being done."""
    try:
        yield
    except (HfHubHTTPError, httpx.HTTPError, OSError) as error:
        raise HubError(f"{what}: {_one_line(error)}") from error


def check_card(folder: Path) -> None:
    """The folder's card must have `configs:` YAML naming split/path data files that exist in the folder."""
    card_path = folder / "README.md"
    if not card_path.is_file():
        raise HubError(f"{card_path}: no dataset card (is {folder} a built dataset folder?)")
    configs = DatasetCard.load(card_path).data.to_dict().get("configs")
    if not configs:
        raise HubError(f"{card_path}: the card has no `configs:` YAML metadata")
    for entry in configs:
        data_files = entry.get("data_files")
        if not isinstance(data_files, list) or not all(isinstance(f, dict) for f in data_files):
            raise HubError(f"{card_path}: config {entry.get('config_name')!r} needs `data_files` as split/path")
        for data_file in data_files:
            if not (folder / data_file["path"]).is_file():
                raise HubError(f"{card_path}: data file {data_file['path']} named in `configs:` is missing")


def folder_files(folder: Path, ignore_patterns: list[str] = HIDDEN_PATTERNS) -> dict[str, Path]:
    """`{path in repo: local file}` for everything `upload_folder(..., ignore_patterns=...)` uploads."""
    files = {path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*")) if path.is_file()}
    return {name: files[name] for name in filter_repo_objects(files, ignore_patterns=ignore_patterns)}


def _file_mismatch(remote: RepoFile, local: Path) -> str | None:
    """Why the remote file is not the local one (size, LFS SHA-256 or git blob id), or None when they are equal."""
    size = local.stat().st_size
    if remote.size != size:
        return f"remote size {remote.size} != local size {size}"
    if remote.lfs is not None:
        with local.open("rb") as file:
            sha256 = hashlib.file_digest(file, "sha256").hexdigest()
        return None if remote.lfs.sha256 == sha256 else f"remote sha256 {remote.lfs.sha256} != local sha256 {sha256}"
    blob_id = git_hash(local.read_bytes())
    return None if remote.blob_id == blob_id else f"remote git blob {remote.blob_id} != local git blob {blob_id}"


def verify_remote_files(
    api: HfApi, repo_id: str, commit: str, files: dict[str, Path], repo_type: str = "dataset"
) -> None:
    """The repository at `commit` must hold exactly `files` (plus `.gitattributes`), each with the local bytes."""
    remote = {
        entry.path: entry
        for entry in api.list_repo_tree(repo_id, recursive=True, revision=commit, repo_type=repo_type)
        if isinstance(entry, RepoFile)
    }
    where = f"{repo_id}@{commit[:8]}"
    if missing := sorted(set(files) - set(remote)):
        raise HubError(f"{where}: {missing[0]} was not uploaded")
    if extra := sorted(set(remote) - set(files) - {GITATTRIBUTES}):
        raise HubError(f"{where}: {extra[0]} is on the Hub but not in the folder")
    for path, local in files.items():
        if mismatch := _file_mismatch(remote[path], local):
            raise HubError(f"{where}: {path} is not the uploaded file ({mismatch})")


def resolve_token(token: str | None = None) -> str:
    """The explicit token, else `HF_TOKEN`, else the saved login; never logged."""
    resolved = token or get_token()
    if not resolved:
        raise HubError("no Hub token: set HF_TOKEN")
    return resolved


def _is_ref_name(revision: str) -> bool:
    """Held to the Hub's repository-name rules without a namespace: a safe subset of git ref names, so the branch or
    tag cannot be refused after the upload."""
    try:
        validate_repo_id(revision)
    except HFValidationError:
        return False
    return "/" not in revision


def _is_version_tag(revision: str) -> bool:
    """A ref name other than `main`, which a tag would shadow."""
    return _is_ref_name(revision) and revision != "main"


def check_names(repo_id: str, revision: str) -> None:
    """`repo_id` must name its owner and pass the Hub's rules; `revision` must be a version tag name."""
    if "/" not in repo_id:
        raise HubError(f"--repo-id {repo_id!r} must be <user or org>/<name>")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubError(f"--repo-id {repo_id!r}: {err}") from None
    if not _is_version_tag(revision):
        raise HubError(f"--revision {revision!r} is not a version tag name (e.g. v1.0.0)")


def push_dataset_folder(
    folder: str | Path, repo_id: str, revision: str, *, token: str | None, force: bool = False, private: bool = False
) -> str:
    """Upload `folder` to `main` of the dataset repo `repo_id` in one commit, verify it, tag it `revision`; return the
    commit."""
    folder = Path(folder).resolve()
    check_names(repo_id, revision)
    check_card(folder)
    verified_shards(folder)  # the shards must still be the ones build_info.json (and the card) describe
    files = folder_files(folder)
    api = HfApi(token=resolve_token(token))

    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    old_target = next(
        (t.target_commit for t in api.list_repo_refs(repo_id, repo_type="dataset").tags if t.name == revision), None
    )
    if old_target is not None:
        try:
            verify_remote_files(api, repo_id, old_target, files)
        except HubError as difference:
            if not force:
                raise HubError(
                    f"tag {revision} already exists on {repo_id} and is not this folder ({difference}): "
                    "use --force to move it"
                ) from None
        else:
            logger.info("tag %s of %s already holds %s: nothing to push", revision, repo_id, folder)
            return old_target

    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=folder,
        ignore_patterns=list(HIDDEN_PATTERNS),  # a copy: upload_folder appends its own defaults to the list
        delete_patterns="*",
        commit_message=f"{folder.name} {revision}",
    ).oid
    verify_remote_files(api, repo_id, commit, files)
    if old_target is not None:
        logger.warning("moving tag %s of %s from commit %s to %s (--force)", revision, repo_id, old_target, commit)
        api.delete_tag(repo_id, tag=revision, repo_type="dataset")
    api.create_tag(repo_id, tag=revision, revision=commit, repo_type="dataset", tag_message=f"{folder.name} {revision}")
    return commit


@dataclass(frozen=True)
class PushTarget:
    """Where a run goes: a model repository and the branch that holds the run."""

    repo_id: str
    revision: str = "main"
    private: bool | None = None

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}"


def _hub_api(token: str | None) -> HfApi:
    """A client with a token, refused in one line when `HF_HUB_OFFLINE` forbids reaching the Hub."""
    if constants.is_offline_mode():
        raise HubError("HF_HUB_OFFLINE is set: the Hub cannot be reached to push (unset it)")
    return HfApi(token=resolve_token(token))


@functools.cache
def _whoami(endpoint: str, token: str) -> dict[str, Any]:
    """The token's user and organizations, asked once per process: the Hub rate-limits `whoami-v2` strictly, and a
    sweep checks the target of every run (a failure is not cached)."""
    return HfApi(endpoint=endpoint, token=token).whoami()


def model_push_target(
    repo_id: str | None,
    *,
    output_dir: str | Path,
    revision: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    names: tuple[str, str] = ("hub_model_id", "hub_revision"),
) -> PushTarget:
    """The repository and branch a run folder is pushed to, with everything the push needs checked first.

    The id is `repo_id`, or (as `Trainer` derives it) the output folder's name; one without a namespace goes under
    the token's user. Checked: a token the Hub accepts (asking `whoami` also shows the Hub is reachable), an id the Hub
    accepts in a namespace the token may write to, and a branch name that no tag of the repository holds. `names` are
    the fields the errors name (the recipe's, or `push-model`'s options)."""
    id_name, revision_name = names
    revision = revision or "main"
    if not _is_ref_name(revision):
        raise HubError(f"{revision_name} {revision!r} is not a branch name (letters, digits, '.', '_', '-')")
    name = repo_id or Path(output_dir).absolute().name
    try:  # before asking the Hub anything
        validate_repo_id(name)
    except HFValidationError as error:
        raise HubError(f"{id_name} {name!r}: {str(error).splitlines()[0]}") from None
    api = _hub_api(token)
    with hub_requests("checking the Hub token"):
        identity = _whoami(api.endpoint, api.token)
    user = identity["name"]
    full_id = name if "/" in name else f"{user}/{name}"
    namespace = full_id.split("/")[0]
    writable = [user, *(org["name"] for org in identity.get("orgs", []) if org.get("roleInOrg") in WRITE_ROLES)]
    token_role = identity.get("auth", {}).get("accessToken", {}).get("role")
    if token_role == "read" or namespace not in writable:
        where = "a read-only token" if token_role == "read" else f"namespaces {', '.join(writable)}"
        raise HubError(f"{id_name} {full_id!r}: the token of {user} cannot write to {namespace!r} ({where})")
    with hub_requests(f"reading the branches of {full_id}"):
        try:
            tags = {tag.name for tag in api.list_repo_refs(full_id).tags}
        except RepositoryNotFoundError:  # created by the push
            tags = set()
    if revision in tags:
        raise HubError(f"{revision_name} {revision!r} is a tag of {full_id}: a run is pushed to a branch")
    return PushTarget(full_id, revision, private)


def sweep_revision(point: dict[str, Any], seed: int, dataset_config: str | None = None) -> str:
    """The branch of one run of a sweep or multi-seed study: `[<config>-]<field>-<value>-...-seed-<seed>` (e.g.
    `seed-0`, `learning_rate-0.001-seed-1`), characters a branch name cannot hold replaced by `-`."""
    parts = [*([dataset_config] if dataset_config else []), *(f"{k}-{v}" for k, v in point.items()), f"seed-{seed}"]
    return re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts))).strip("-.")


def _create_branch(api: HfApi, target: PushTarget) -> bool:
    """Create the target branch from `main` unless it exists; whether it was created here."""
    if target.revision in {branch.name for branch in api.list_repo_refs(target.repo_id).branches}:
        return False
    api.create_branch(target.repo_id, branch=target.revision)
    return True


def push_run_folder(folder: str | Path, target: PushTarget, *, token: str | None, message: str) -> str:
    """One commit that makes `target`'s branch hold exactly the run folder (no checkpoints, no hidden files), checked
    file by file; returns the branch's commit (the same one when nothing changed: no empty commit). A branch created
    for the push is deleted again when the push fails."""
    folder = Path(folder)
    files = folder_files(folder, RUN_IGNORE_PATTERNS)
    api = _hub_api(token)
    with hub_requests(f"pushing {folder} to {target}"):
        api.create_repo(target.repo_id, private=target.private, exist_ok=True)
        created = _create_branch(api, target)
        try:
            commit = api.upload_folder(
                repo_id=target.repo_id,
                folder_path=folder,
                revision=target.revision,
                ignore_patterns=list(RUN_IGNORE_PATTERNS),
                delete_patterns="*",  # files of an earlier run on this branch that this folder does not hold
                commit_message=message,
            ).oid
            verify_remote_files(api, target.repo_id, commit, files, repo_type="model")
        except BaseException:
            if created:
                with contextlib.suppress(HfHubHTTPError, httpx.HTTPError):
                    api.delete_branch(target.repo_id, branch=target.revision)
            raise
    return commit


def parse_hub_run(reference: str) -> tuple[str, str]:
    """`hf://<org>/<name>[@<revision>]` as (repository id, revision; `main` when none is given)."""
    repo_id, _, revision = reference.removeprefix(HUB_RUN_SCHEME).partition("@")
    revision = revision or "main"
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        repo_id = ""
    if not reference.startswith(HUB_RUN_SCHEME) or "/" not in repo_id or not _is_ref_name(revision):
        raise HubError(f"{reference!r} is not {HUB_RUN_SCHEME}<org>/<name>[@<revision>]")
    return repo_id, revision


def fetch_run(repo_id: str, revision: str, local_dir: str | Path) -> Path:
    """Download a pushed run into `local_dir` and check that its card names the run its `run_info.json` describes (the
    recipe, experiment, training mode and dataset identity the evaluation goes by)."""
    where = f"{HUB_RUN_SCHEME}{repo_id}@{revision}"
    if constants.is_offline_mode():
        raise HubError(f"{where}: HF_HUB_OFFLINE is set, so it cannot be downloaded (unset it)")
    with hub_requests(f"downloading {where}"):
        folder = Path(snapshot_download(repo_id, revision=revision, local_dir=local_dir))
    card_path, info = folder / "README.md", run_folder.read_run_info(folder)
    if info is None or not card_path.is_file():
        missing = run_folder.RUN_INFO if info is None else "README.md"
        raise HubError(f"{where}: no {missing}, so not a run pushed by reversal-hf (push it with `push-model`)")
    card = ModelCard.load(card_path).data.to_dict().get(RUN_CARD_KEY) or {}
    if not card.get("experiment") or not (card.get("dataset") or {}).get("name"):
        raise HubError(f"{where}: the card's {RUN_CARD_KEY} metadata names no experiment and dataset")
    for key in RUN_CARD_FIELDS:
        if card.get(key) != info.get(key):
            raise HubError(f"{where}: the card's {key} {card.get(key)!r} is not run_info.json's {info.get(key)!r}")
    return folder


def _one_line(err: Exception) -> str:
    """Hub HTTP errors span several lines (URL, docs link); the user needs the request and the server's reason."""
    if isinstance(err, HfHubHTTPError) and err.response is not None:
        response = err.response
        reason = err.server_message or response.reason_phrase
        return f"{response.request.method} {response.url} failed with {response.status_code}: {reason}"
    if isinstance(err, httpx.RequestError):  # no answer at all, e.g. a wrong HF_ENDPOINT
        return f"{err.request.method} {err.request.url} failed: {' '.join(str(err).split())}"
    return " ".join(str(err).split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="push_dataset", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a built dataset folder (README.md card + data/<config>/...)")
    parser.add_argument("--repo-id", required=True, help="dataset repository on the Hub, <user or org>/<name>")
    parser.add_argument("--revision", required=True, help="version tag to create, e.g. v1.0.0")
    parser.add_argument("--force", action="store_true", help="move the tag if this version was already pushed")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    args = parser.parse_args(argv)
    return run_command(
        lambda: push_dataset_folder(
            args.folder, args.repo_id, args.revision, token=None, force=args.force, private=args.private
        ),
        # OSError includes HfHubHTTPError; `httpx` is the HTTP client huggingface_hub raises from (httpx2 in 2.x)
        (HubError, FileFormatError, OSError, httpx.HTTPError),
        done=lambda commit: f"{args.folder} is on {args.repo_id}: tag {args.revision} -> {commit}",
        describe=_one_line,
    )


if __name__ == "__main__":
    sys.exit(main())
