"""A Hub-compatible HTTP server for tests: the real `huggingface_hub`/`datasets` clients push to it and load from it.

No Hub is reachable here, so the endpoints our publishing paths use are served by this stand-in, in the shapes the
installed `huggingface_hub` reads: `whoami` (the token's user and organizations), `HfApi.upload_folder` (repo
creation in a namespace the token may write to, `validate-yaml`, preupload, Git LFS batch + upload, NDJSON commits,
tree listings), branches, tags and refs (`reversal-hf push-data`, `push-model`), and file resolution for
`load_dataset(repo, config, revision=...)`, `snapshot_download` and `from_pretrained(repo, revision=...)`.
Repositories keep git-like history in memory: every commit is a full snapshot `path -> Blob`, branches and tags point
at commits. Model and dataset repositories are both served (`/api/models/...`, `/api/datasets/...`). Only the
standard library (plus PyYAML for `validate-yaml`) is used; requests are handled in background threads.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

# Files the Hub stores through Git LFS by default (a subset of its default `.gitattributes`).
LFS_EXTENSIONS = ("parquet", "arrow", "safetensors", "bin", "pt", "pth", "ckpt", "gguf", "h5", "onnx", "npy", "pkl")
DEFAULT_GITATTRIBUTES = "".join(f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in LFS_EXTENSIONS)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub's limit for regular (non-LFS) files
REPO_TYPES = {"models": "model", "datasets": "dataset"}
URL_PREFIXES = {"model": "", "dataset": "datasets/"}
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
REF_NAME = r"[A-Za-z0-9][A-Za-z0-9._/-]*"  # what the server accepts as a new branch or tag name
# The organizations the test user belongs to, with its role in each: "read" members cannot create repositories.
DEFAULT_ORGS = {"reversal-org": "write", "reversal-readers": "read"}
WRITE_ROLES = ("admin", "write", "contributor")


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass(frozen=True)
class Blob:
    """File content; LFS blobs are stored in git as a pointer, so their git OID is the pointer's."""

    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @property
    def git_oid(self) -> str:
        return _git_oid(self.pointer if self.lfs else self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid

    def altered(self) -> Blob:
        """The same size with the first byte flipped: what a faulty store would keep."""
        return Blob(bytes([self.data[0] ^ 0xFF]) + self.data[1:], self.lfs)


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    title: str
    date: float
    files: dict[str, Blob]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created: float
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        """A branch, a tag or a full commit sha."""
        return self.commits.get(self.branches.get(revision) or self.tags.get(revision) or revision)

    def add_commit(self, branch: str, title: str, files: dict[str, Blob]) -> Commit:
        parent = self.branches.get(branch)
        date = time.time()
        listing = "".join(f"{path}\0{blob.git_oid}\n" for path, blob in sorted(files.items()))
        sha = hashlib.sha1(f"{parent}\n{title}\n{date}\n{len(self.commits)}\n{listing}".encode()).hexdigest()
        self.commits[sha] = Commit(sha, parent, title, date, files)
        self.branches[branch] = sha
        return self.commits[sha]


class HubError(Exception):
    """An error response: status, message and the `X-Error-Code` the client maps to its exception types."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _not_found(code: str, what: str) -> HubError:
    return HubError(404, f"{what} not found", code)


class HubState:
    """All repositories and uploaded LFS objects; every access goes through `lock`."""

    def __init__(self, token: str, user: str, orgs: dict[str, str]):
        self.token, self.user, self.orgs = token, user, orgs
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.lfs_expected: dict[str, int] = {}  # announced by a batch request, not yet uploaded
        self.altered_paths: set[str] = set()  # stored as `Blob.altered()` when committed (see `HubServer.altering`)
        self.lock = threading.RLock()

    def repo(self, repo_type: str, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authorized):
            raise _not_found("RepoNotFound", f"Repository {repo_id}")
        return repo

    def can_write(self, namespace: str) -> bool:
        return namespace == self.user or self.orgs.get(namespace) in WRITE_ROLES

    def at_revision(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _not_found("RevisionNotFound", f"Revision {revision}")
        return commit


def _file_entry(path: str, blob: Blob) -> dict:
    entry = {"type": "file", "oid": blob.git_oid, "size": len(blob.data), "path": path}
    if blob.lfs:
        entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": len(blob.pointer)}
    return entry


def _folder_entry(path: str, files: dict[str, Blob]) -> dict:
    listing = "".join(f"{p}\0{b.git_oid}\n" for p, b in sorted(files.items()) if p.startswith(path + "/"))
    return {"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0, "path": path}


def _folders(files: dict[str, Blob]) -> set[str]:
    return {"/".join(parts[:i]) for parts in (p.split("/") for p in files) for i in range(1, len(parts))}


def _is_lfs(files: dict[str, Blob], path: str, size: int, sample: bytes) -> bool:
    """The Hub's rule: LFS when `.gitattributes` says so, when the file is large, or when it looks binary."""
    attributes = files.get(".gitattributes", Blob(DEFAULT_GITATTRIBUTES.encode(), False)).data.decode()
    patterns = [line.split()[0] for line in attributes.splitlines() if "filter=lfs" in line]
    name = path.rsplit("/", 1)[-1]
    matches = any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in patterns)
    return matches or size >= LFS_SIZE_THRESHOLD or b"\0" in sample


def _card_errors(content: str) -> list[str]:
    """What the Hub's `validate-yaml` would reject: unparsable front matter or front matter that is not a mapping."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
    if match is None:
        return []
    try:
        metadata = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        return [f"invalid YAML: {' '.join(str(err).split())}"]
    return [] if metadata is None or isinstance(metadata, dict) else ["YAML metadata must be a mapping"]


REPO = r"(?P<type>models|datasets)/(?P<repo>[^/]+/[^/]+)"
RESOLVE_REPO = r"(?:(?P<type>datasets)/)?(?P<repo>[^/]+/[^/]+)"


class HubRequestHandler(BaseHTTPRequestHandler):
    """Routes each request to a `_name` method; the method returns `(status, JSON body)` or writes the reply itself."""

    protocol_version = "HTTP/1.1"
    state: HubState  # set on the subclass made per server

    ROUTES: list[tuple[str, str, str]] = [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", rf"/api/{REPO}(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        ("GET", rf"/api/{REPO}/refs", "refs"),
        ("POST", rf"/api/{REPO}/tag/(?P<rev>[^/]+)", "create_tag"),
        ("DELETE", rf"/api/{REPO}/tag/(?P<name>[^/]+)", "delete_tag"),
        ("POST", rf"/api/{REPO}/branch/(?P<name>[^/]+)", "create_branch"),
        ("DELETE", rf"/api/{REPO}/branch/(?P<name>[^/]+)", "delete_branch"),
        ("POST", rf"/api/{REPO}/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", rf"/api/{REPO}/commit/(?P<rev>[^/]+)", "commit"),
        ("GET", rf"/api/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
        ("POST", rf"/{RESOLVE_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
        ("GET", rf"/{RESOLVE_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("HEAD", rf"/{RESOLVE_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ]

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest shows failing requests through the client's own errors."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing ---------------------------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if self.headers.get("Transfer-Encoding"):  # the Hub clients always send Content-Length
            self.close_connection = True
            self._send_json(411, {"error": "a Content-Length is required"})
            return
        # Read it all up front: an error reply must not leave body bytes in a kept-alive connection.
        self.request_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        for route_method, pattern, name in self.ROUTES:
            match = re.fullmatch(pattern, url.path)
            if route_method == method and match:
                params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                if "repo" in params:  # `/api/models/..` and `/api/datasets/..`; plain `/<repo>/resolve/..` is a model
                    params["type"] = REPO_TYPES[params.get("type", "models")]
                handler: Callable[..., tuple[int, object] | None] = getattr(self, f"_{name}")
                try:
                    with self.state.lock:
                        reply = handler(**params)
                except HubError as err:
                    reply = None
                    self._send_json(err.status, {"error": err.message}, err.code, err.message)
                if reply is not None:
                    self._send_json(*reply)
                return
        self._send_json(404, {"error": f"no route for {method} {url.path}"})

    def json(self) -> dict:
        try:
            return json.loads(self.request_body or b"{}")
        except json.JSONDecodeError as err:
            raise HubError(400, f"request body is not JSON: {err}") from None

    def _send_json(self, status: int, payload: object, code: str | None = None, message: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if code:
            self.send_header("X-Error-Code", code)
        if message:
            self.send_header("X-Error-Message", message)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.state.token}"

    def require_auth(self) -> None:
        if not self.authorized():
            raise HubError(401, INVALID_CREDENTIALS)

    def base_url(self) -> str:
        return f"http://{self.headers.get('Host')}"

    def repo_url(self, repo: Repo) -> str:
        return f"{self.base_url()}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    def head(self, repo: Repo, branch: str) -> Commit:
        if branch not in repo.branches:
            raise _not_found("RevisionNotFound", f"Branch {branch}")
        return repo.commits[repo.branches[branch]]

    # -- account and repositories -----------------------------------------------------------------------------------

    def _whoami(self) -> tuple[int, object]:
        self.require_auth()
        orgs = [{"type": "org", "name": name, "roleInOrg": role} for name, role in self.state.orgs.items()]
        access_token = {"displayName": "test token", "role": "write"}
        return 200, {
            "type": "user",
            "name": self.state.user,
            "fullname": self.state.user,
            "orgs": orgs,
            "auth": {"type": "access_token", "accessToken": access_token},
        }

    def _create_repo(self) -> tuple[int, object]:
        self.require_auth()
        payload = self.json()
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"unsupported repo type {repo_type!r}")
        namespace = payload.get("organization") or self.state.user
        repo_id = f"{namespace}/{payload['name']}"
        if (repo_type, repo_id) in self.state.repos:
            repo = self.state.repos[(repo_type, repo_id)]
            return 409, {"error": f"You already created this {repo_type} repo", "url": self.repo_url(repo)}
        if not self.state.can_write(namespace):
            raise HubError(403, f"You don't have the rights to create a {repo_type} under the namespace {namespace}")
        private = payload.get("visibility", "private" if payload.get("private") else "public") != "public"
        repo = Repo(repo_type, repo_id, private, time.time())
        repo.add_commit("main", "initial commit", {".gitattributes": Blob(DEFAULT_GITATTRIBUTES.encode(), False)})
        self.state.repos[(repo_type, repo_id)] = repo
        return 200, {"url": self.repo_url(repo), "name": repo_id, "id": repo_id}

    def _validate_yaml(self) -> tuple[int, object]:
        errors = _card_errors(self.json().get("content", ""))
        return (400 if errors else 200), {"errors": [{"message": e} for e in errors], "warnings": []}

    def _repo_info(self, type: str, repo: str, rev: str = "main") -> tuple[int, object]:
        repository = self.state.repo(type, repo, self.authorized())
        commit = self.state.at_revision(repository, rev)
        return 200, {
            "_id": hashlib.sha1(f"{type}/{repo}".encode()).hexdigest()[:24],
            "id": repo,
            "author": repo.split("/")[0],
            "sha": commit.sha,
            "lastModified": _iso(commit.date),
            "createdAt": _iso(repository.created),
            "private": repository.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }

    # -- refs ------------------------------------------------------------------------------------------------------

    def _refs(self, type: str, repo: str) -> tuple[int, object]:
        repository = self.state.repo(type, repo, self.authorized())

        def refs(kind: str, names: dict[str, str]) -> list[dict]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": sha} for n, sha in sorted(names.items())]

        return 200, {
            "branches": refs("heads", repository.branches),
            "tags": refs("tags", repository.tags),
            "converts": [],
            "pullRequests": [],
        }

    def _create_tag(self, type: str, repo: str, rev: str) -> tuple[int, object]:
        return self._add_ref(type, repo, "tag", self.json().get("tag") or "", rev)

    def _delete_tag(self, type: str, repo: str, name: str) -> tuple[int, object]:
        self.require_auth()
        repository = self.state.repo(type, repo, True)
        if repository.tags.pop(name, None) is None:
            raise _not_found("RevisionNotFound", f"Tag {name}")
        return 200, {}

    def _create_branch(self, type: str, repo: str, name: str) -> tuple[int, object]:
        return self._add_ref(type, repo, "branch", name, self.json().get("startingPoint") or "main")

    def _add_ref(self, type: str, repo: str, kind: str, name: str, start: str) -> tuple[int, object]:
        """A new tag or branch at `start`: the Hub's 400 for a bad name, 409 for a name a tag or branch has."""
        self.require_auth()
        repository = self.state.repo(type, repo, True)
        target = self.state.at_revision(repository, start)
        if not re.fullmatch(REF_NAME, name):
            raise HubError(400, f"Invalid {kind} name {name!r}")
        if name in repository.branches or name in repository.tags:
            raise HubError(409, f"Reference {name} already exists")
        (repository.tags if kind == "tag" else repository.branches)[name] = target.sha
        return 200, {}

    def _delete_branch(self, type: str, repo: str, name: str) -> tuple[int, object]:
        self.require_auth()
        repository = self.state.repo(type, repo, True)
        if name == "main":
            raise HubError(403, "The main branch cannot be deleted")
        if repository.branches.pop(name, None) is None:
            raise _not_found("RevisionNotFound", f"Branch {name}")
        return 200, {}

    # -- uploads and commits ---------------------------------------------------------------------------------------

    def _preupload(self, type: str, repo: str, rev: str) -> tuple[int, object]:
        self.require_auth()
        repository = self.state.repo(type, repo, True)
        head = self.head(repository, rev)
        files = []
        for item in self.json().get("files", []):
            path, size, sample = item["path"], int(item["size"]), base64.b64decode(item.get("sample", ""))
            lfs = _is_lfs(head.files, path, size, sample)
            existing = head.files.get(path)
            files.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": existing.etag if existing and existing.lfs == lfs else None,
                }
            )
        return 200, {"files": files, "commitOid": head.sha}

    def _lfs_batch(self, type: str, repo: str) -> tuple[int, object]:
        self.require_auth()
        self.state.repo(type, repo, True)
        payload = self.json()
        if payload.get("operation") != "upload":
            raise HubError(400, "only the upload operation is supported")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.state.lfs_objects:
                self.state.lfs_expected[oid] = size
                entry["actions"] = {"upload": {"href": f"{self.base_url()}/lfs-upload/{oid}", "expires_in": 3600}}
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def _lfs_upload(self, oid: str) -> tuple[int, object]:
        """Stands in for the pre-signed storage URL: only objects announced by a batch request are accepted."""
        if oid not in self.state.lfs_expected:
            raise HubError(403, f"LFS object {oid} was not announced by a batch request")
        data = self.request_body
        if hashlib.sha256(data).hexdigest() != oid or len(data) != self.state.lfs_expected[oid]:
            raise HubError(400, f"uploaded content does not match LFS object {oid}")
        self.state.lfs_objects[oid] = data
        del self.state.lfs_expected[oid]
        return 200, {}

    def _commit(self, type: str, repo: str, rev: str) -> tuple[int, object]:
        self.require_auth()
        repository = self.state.repo(type, repo, True)
        head = self.head(repository, rev)
        lines = [json.loads(line) for line in self.request_body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        files, written = dict(head.files), set()
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            path = value["path"]
            written.add(path)
            if key == "file":
                files[path] = Blob(base64.b64decode(value["content"]), False)
            elif key == "lfsFile":
                if value["oid"] not in self.state.lfs_objects:
                    raise HubError(400, f"LFS object {value['oid']} for {path} was never uploaded")
                files[path] = Blob(self.state.lfs_objects[value["oid"]], True)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            else:
                raise HubError(400, f"unsupported commit operation {key!r}")
        for path in self.state.altered_paths & written & files.keys():
            files[path] = files[path].altered()
        commit = repository.add_commit(rev, lines[0]["value"].get("summary") or "update", files)
        return 200, {
            "success": True,
            "commitOid": commit.sha,
            "pullRequestUrl": None,
            "commitUrl": f"{self.repo_url(repository)}/commit/{commit.sha}",
        }

    # -- reading ---------------------------------------------------------------------------------------------------

    def _tree(self, type: str, repo: str, rev: str, path: str = "") -> tuple[int, object]:
        commit = self.state.at_revision(self.state.repo(type, repo, self.authorized()), rev)
        path = path.strip("/")
        folders = _folders(commit.files)
        if path and path not in folders:
            raise _not_found("EntryNotFound", f"Folder {path}")
        prefix = f"{path}/" if path else ""
        recursive = self.query.get("recursive", "").lower() == "true"

        def listed(p: str) -> bool:
            return p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])

        entries = [_folder_entry(p, commit.files) for p in sorted(folders) if listed(p)]
        entries += [_file_entry(p, b) for p, b in sorted(commit.files.items()) if listed(p)]
        return 200, entries

    def _resolve(self, type: str, repo: str, rev: str, path: str) -> None:
        commit = self.state.at_revision(self.state.repo(type, repo, self.authorized()), rev)
        blob = commit.files.get(path)
        if blob is None:
            raise _not_found("EntryNotFound", f"File {path}")
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{blob.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if blob.lfs:
            headers |= {"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(blob.data))}
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(blob.data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(blob.data)


class HubServer:
    """A running server on 127.0.0.1 with a random port; use as a context manager or call `start`/`stop`."""

    def __init__(self, token: str = "hf_test_token", user: str = "reversal-tester", orgs: dict[str, str] | None = None):
        self.state = HubState(token, user, dict(DEFAULT_ORGS if orgs is None else orgs))
        handler = type("BoundHubRequestHandler", (HubRequestHandler,), {"state": self.state})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self.token = token

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client_env(self, hf_home: str) -> dict[str, str]:
        """Environment for a client process that talks to this server with a fresh cache under `hf_home`."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_TOKEN": self.token,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": hf_home,
            "HF_HUB_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, bytes]:
        """The snapshot at `revision`, for assertions on what the clients wrote."""
        with self.state.lock:
            repo = self.state.repo(repo_type, repo_id, True)
            return {path: blob.data for path, blob in self.state.at_revision(repo, revision).files.items()}

    def refs(self, repo_id: str, repo_type: str = "dataset") -> dict[str, dict[str, str]]:
        """`{"branches": {name: sha}, "tags": {name: sha}}`."""
        with self.state.lock:
            repo = self.state.repo(repo_type, repo_id, True)
            return {"branches": dict(repo.branches), "tags": dict(repo.tags)}

    def history(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[str]:
        """The commits reachable from `revision`, newest first (to count the commits a push made)."""
        with self.state.lock:
            repo = self.state.repo(repo_type, repo_id, True)
            commit: Commit | None = self.state.at_revision(repo, revision)
            shas = []
            while commit is not None:
                shas.append(commit.sha)
                commit = repo.commits.get(commit.parent) if commit.parent else None
            return shas

    @contextmanager
    def altering(self, path: str) -> Iterator[None]:
        """While inside, a commit that adds `path` stores it altered (`Blob.altered`): clients must notice."""
        with self.state.lock:
            self.state.altered_paths.add(path)
        try:
            yield
        finally:
            with self.state.lock:
                self.state.altered_paths.discard(path)
