"""Push a built dataset folder (Hub repository layout) to the Hub, byte for byte, and tag its version.

The folder is uploaded as it is (`HfApi.upload_folder`), in one commit that also deletes whatever else the repository
held, so the shards on the Hub are the very bytes `build_info.json`'s content hash covers. Before the version tag is
created, every remote file's size and hash (LFS SHA-256, or git blob id for small files) is checked against the local
file. A version tag is a promise about its rows: a tag that already holds the folder's files is left as it is (so a
`make push-data` that failed part way is finished by running it again), one that holds other files is moved only
with `force`, and a forced push says that it moved the tag. The endpoint is `HF_ENDPOINT` (read by `huggingface_hub`
at import), the token `HF_TOKEN` or the saved login.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from pathlib import Path

from huggingface_hub import DatasetCard, HfApi, RepoFile, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import filter_repo_objects, httpx, validate_repo_id
from huggingface_hub.utils.sha import git_hash

from reversal_hf.command import run_command
from reversal_hf.data.hub_layout import verified_shards
from reversal_hf.files import FileFormatError

logger = logging.getLogger(__name__)

# Dot-files and dot-folders (git, caches, editor files) are no part of a built dataset and are never uploaded.
HIDDEN_PATTERNS = [".*", "*/.*"]
GITATTRIBUTES = ".gitattributes"  # created by the Hub with the repository; `upload_folder` never deletes it


class HubPushError(RuntimeError):
    """A push that cannot or must not happen: the message is shown to the user as one line."""


def check_card(folder: Path) -> None:
    """The folder's card must have `configs:` YAML naming split/path data files that exist in the folder."""
    card_path = folder / "README.md"
    if not card_path.is_file():
        raise HubPushError(f"{card_path}: no dataset card (is {folder} a built dataset folder?)")
    configs = DatasetCard.load(card_path).data.to_dict().get("configs")
    if not configs:
        raise HubPushError(f"{card_path}: the card has no `configs:` YAML metadata")
    for entry in configs:
        data_files = entry.get("data_files")
        if not isinstance(data_files, list) or not all(isinstance(f, dict) for f in data_files):
            raise HubPushError(f"{card_path}: config {entry.get('config_name')!r} needs `data_files` as split/path")
        for data_file in data_files:
            if not (folder / data_file["path"]).is_file():
                raise HubPushError(f"{card_path}: data file {data_file['path']} named in `configs:` is missing")


def folder_files(folder: Path) -> dict[str, Path]:
    """`{path in repo: local file}` for everything `upload_folder(..., ignore_patterns=HIDDEN_PATTERNS)` uploads."""
    files = {path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*")) if path.is_file()}
    return {name: files[name] for name in filter_repo_objects(files, ignore_patterns=HIDDEN_PATTERNS)}


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


def verify_remote_files(api: HfApi, repo_id: str, commit: str, files: dict[str, Path]) -> None:
    """The repository at `commit` must hold exactly `files` (plus `.gitattributes`), each with the local bytes."""
    remote = {
        entry.path: entry
        for entry in api.list_repo_tree(repo_id, recursive=True, revision=commit, repo_type="dataset")
        if isinstance(entry, RepoFile)
    }
    where = f"{repo_id}@{commit[:8]}"
    if missing := sorted(set(files) - set(remote)):
        raise HubPushError(f"{where}: {missing[0]} was not uploaded")
    if extra := sorted(set(remote) - set(files) - {GITATTRIBUTES}):
        raise HubPushError(f"{where}: {extra[0]} is on the Hub but not in the folder")
    for path, local in files.items():
        if mismatch := _file_mismatch(remote[path], local):
            raise HubPushError(f"{where}: {path} is not the uploaded file ({mismatch})")


def resolve_token(token: str | None = None) -> str:
    """The explicit token, else `HF_TOKEN`, else the saved login; never logged."""
    resolved = token or get_token()
    if not resolved:
        raise HubPushError("no Hub token: set HF_TOKEN")
    return resolved


def _is_version_tag(revision: str) -> bool:
    """Held to the Hub's repository-name rules without a namespace: a safe subset of git ref names, so the tag cannot
    be refused after the upload; `main` would shadow the branch."""
    try:
        validate_repo_id(revision)
    except HFValidationError:
        return False
    return "/" not in revision and revision != "main"


def check_names(repo_id: str, revision: str) -> None:
    """`repo_id` must name its owner and pass the Hub's rules; `revision` must be a version tag name."""
    if "/" not in repo_id:
        raise HubPushError(f"--repo-id {repo_id!r} must be <user or org>/<name>")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubPushError(f"--repo-id {repo_id!r}: {err}") from None
    if not _is_version_tag(revision):
        raise HubPushError(f"--revision {revision!r} is not a version tag name (e.g. v1.0.0)")


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
        except HubPushError as difference:
            if not force:
                raise HubPushError(
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
        (HubPushError, FileFormatError, OSError, httpx.HTTPError),
        done=lambda commit: f"{args.folder} is on {args.repo_id}: tag {args.revision} -> {commit}",
        describe=_one_line,
    )


if __name__ == "__main__":
    sys.exit(main())
