"""Push a built dataset folder (Hub repository layout) to the Hub and tag its version.

Each config goes through the real `datasets` uploader (`DatasetDict.push_to_hub`) into the very shard paths the
folder's card names, then our own card and build files replace the card `push_to_hub` generated, in one last commit
that also removes data files the folder no longer has. That commit is tagged with the version. A version tag is a
promise about its rows: re-pushing an existing version is refused unless `force`, and a forced push says that it
moved the tag. The endpoint is `HF_ENDPOINT` (read by `huggingface_hub` at import), the token `HF_TOKEN` or the
saved login.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

import datasets
import httpx2
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, DatasetCard, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError
from tqdm.auto import tqdm

from reversal_hf.data.cli import run_command

logger = logging.getLogger(__name__)

TAG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
REPO_ID_PATTERN = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


class HubPushError(RuntimeError):
    """A push that cannot or must not happen: the message is shown to the user as one line."""


def card_configs(folder: Path) -> dict[str, dict[str, str]]:
    """`{config: {split: shard path}}` from the `configs:` YAML of the folder's card, each shard checked to exist."""
    card_path = folder / "README.md"
    if not card_path.is_file():
        raise HubPushError(f"{card_path}: no dataset card (is {folder} a built dataset folder?)")
    configs = DatasetCard.load(card_path).data.to_dict().get("configs")
    if not configs:
        raise HubPushError(f"{card_path}: the card has no `configs:` YAML metadata")
    layout: dict[str, dict[str, str]] = {}
    for entry in configs:
        data_files = entry.get("data_files")
        if not isinstance(data_files, list) or not all(isinstance(f, dict) for f in data_files):
            raise HubPushError(f"{card_path}: config {entry.get('config_name')!r} needs `data_files` as split/path")
        layout[entry["config_name"]] = {f["split"]: f["path"] for f in data_files}
        for path in layout[entry["config_name"]].values():
            if not (folder / path).is_file():
                raise HubPushError(f"{card_path}: data file {path} named in `configs:` is missing")
    return layout


def _config_data_dir(config: str, shards: dict[str, str]) -> str:
    """The folder of a config's shards, laid out as `push_to_hub` names them with one shard per split."""
    data_dir = next(iter(shards.values())).rsplit("/", 1)[0]
    if any(path != f"{data_dir}/{split}-00000-of-00001.parquet" for split, path in shards.items()):
        raise HubPushError(f"config {config!r}: shards must be <folder>/<split>-00000-of-00001.parquet in one folder")
    return data_dir


def _card_and_build_files(folder: Path) -> list[str]:
    """Everything beside the shards: README.md, build_info.json and extra files such as prompts.json."""
    files = (p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    return sorted(p.as_posix() for p in files if p.parts[0] != "data")


def resolve_token(token: str | None = None) -> str:
    """The explicit token, else `HF_TOKEN`, else the saved login; never logged."""
    resolved = token or get_token()
    if not resolved:
        raise HubPushError("no Hub token: set HF_TOKEN")
    return resolved


def push_dataset_folder(
    folder: str | Path, repo_id: str, revision: str, *, token: str | None, force: bool = False, private: bool = False
) -> str:
    """Push every config of `folder` to `main` of the dataset repo `repo_id`, tag it `revision`, return the commit."""
    folder = Path(folder).resolve()
    if not REPO_ID_PATTERN.fullmatch(repo_id):
        raise HubPushError(f"--repo-id {repo_id!r} must be <user or org>/<name>")
    if not TAG_PATTERN.fullmatch(revision) or revision == "main":
        raise HubPushError(f"--revision {revision!r} is not a version tag name (e.g. v1.0.0)")
    layout = card_configs(folder)
    data_dirs = {config: _config_data_dir(config, shards) for config, shards in layout.items()}
    token = resolve_token(token)
    api = HfApi(token=token)

    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    old_target = next(
        (t.target_commit for t in api.list_repo_refs(repo_id, repo_type="dataset").tags if t.name == revision), None
    )
    if old_target is not None and not force:
        raise HubPushError(
            f"tag {revision} already exists on {repo_id} (commit {old_target[:8]}): use --force to move it"
        )

    for config in tqdm(layout, desc=f"Pushing {folder.name} configs", unit="config"):
        dataset = datasets.load_dataset(str(folder), config)
        dataset.push_to_hub(
            repo_id,
            config_name=config,
            data_dir=data_dirs[config],
            num_shards=dict.fromkeys(dataset, 1),
            revision="main",
            token=token,
            commit_message=f"Upload config {config} ({revision})",
        )

    repo_files = set(api.list_repo_files(repo_id, repo_type="dataset"))
    shard_paths = {path for shards in layout.values() for path in shards.values()}
    if missing := sorted(shard_paths - repo_files):
        raise HubPushError(f"push_to_hub did not write the shards the card names: {', '.join(missing)}")
    stale = sorted(p for p in repo_files if p.startswith("data/") and p not in shard_paths)
    commit = api.create_commit(
        repo_id,
        repo_type="dataset",
        operations=[CommitOperationAdd(p, folder / p) for p in _card_and_build_files(folder)]
        + [CommitOperationDelete(p) for p in stale],
        commit_message=f"Dataset card and build info ({revision})",
    )
    if old_target is not None:
        logger.warning("moving tag %s of %s from commit %s to %s (--force)", revision, repo_id, old_target, commit.oid)
        api.delete_tag(repo_id, tag=revision, repo_type="dataset")
    api.create_tag(
        repo_id, tag=revision, revision=commit.oid, repo_type="dataset", tag_message=f"{folder.name} {revision}"
    )
    return commit.oid


def _one_line(err: Exception) -> str:
    """Hub HTTP errors span several lines (URL, docs link); the user needs the status and the server's reason."""
    if isinstance(err, HfHubHTTPError) and err.response is not None:
        response = err.response
        reason = err.server_message or response.reason_phrase
        return f"{response.request.method} {response.url} failed with {response.status_code}: {reason}"
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
        (HubPushError, OSError, httpx2.HTTPError),  # OSError includes HfHubHTTPError
        done=lambda commit: f"pushed {args.folder} to {args.repo_id}: tag {args.revision} -> {commit}",
        describe=_one_line,
    )


if __name__ == "__main__":
    sys.exit(main())
