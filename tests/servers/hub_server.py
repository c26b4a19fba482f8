"""A local fake of the Hugging Face Hub for tests: the few HTTP endpoints ``huggingface_hub`` and
``datasets`` call to read a repository (streaming included) and to push to one, on 127.0.0.1 only.

Use from a test (``tests/`` is on ``sys.path`` under pytest)::

    from servers.hub_server import run_hub_server

    with run_hub_server(tmp_path / "hub") as hub:
        hub.add_file("datasets", "owner/name", "data/train.jsonl", b"...")   # a local dataset repository
        env = hub.client_env()           # HF_ENDPOINT, HF_TOKEN, HF_HOME: run lt with it
        hub.files("datasets", "owner/name")   # {path: bytes} after a push
        hub.requests()                   # (method, path) of every request so far

Repositories are folders, ``ROOT/{datasets,models}/OWNER/NAME/``, with one branch, ``main``; its
commit id is a hash of the files, so it changes with every commit. Endpoints:

* reading: ``GET /api/{datasets,models}/REPO[/revision/REV]`` (repository info with its files),
  ``GET /api/.../tree/REV[/PATH]``, ``POST /api/.../paths-info/REV``, and
  ``HEAD``/``GET /[datasets/]REPO/resolve/REV/PATH`` with ``Range`` requests (what streaming uses);
* pushing: ``POST /api/repos/create``, ``POST /api/validate-yaml`` (a card's metadata),
  ``POST /api/.../preupload/REV`` (every file is uploaded inline: ``regular``),
  ``POST /api/.../commit/REV`` (NDJSON with base64 file contents);
* ``GET /api/whoami-v2``. Requests need ``Authorization: Bearer TOKEN`` when the server has a token
  and the request writes (pushes); anything else answers 404 with the Hub's error headers.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

MAIN = "main"


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class Hub:
    """The repositories on disk, and a request log."""

    def __init__(self, root: Path, token: str | None):
        self.root = root
        self.token = token
        self.lock = threading.Lock()
        self.log: list[tuple[str, str]] = []
        #: (path, Range header) of every request, and bytes of file content served per path
        self.ranges: list[tuple[str, str | None]] = []
        self.served: dict[str, int] = {}
        self.commits: list[dict] = []

    def folder(self, kind: str, repo: str) -> Path:
        return self.root / kind / repo

    def exists(self, kind: str, repo: str) -> bool:
        return self.folder(kind, repo).is_dir()

    def file_list(self, kind: str, repo: str) -> list[str]:
        folder = self.folder(kind, repo)
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())

    def sha(self, kind: str, repo: str) -> str:
        digest = hashlib.sha1()
        for name in self.file_list(kind, repo):
            digest.update(name.encode() + b"\0" + hashlib.sha1((self.folder(kind, repo) / name).read_bytes()).digest())
        return digest.hexdigest()

    def check_revision(self, kind: str, repo: str, revision: str) -> None:
        if not self.exists(kind, repo):
            raise HubError(404, f"repository {repo} not found", "RepoNotFound")
        if urllib.parse.unquote(revision) not in (MAIN, self.sha(kind, repo)):
            raise HubError(404, f"revision {revision} not found", "RevisionNotFound")


def _entry(folder: Path, path: str) -> dict:
    target = folder / path
    if target.is_dir():
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
    data = target.read_bytes()
    oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id
    return {"type": "file", "oid": oid, "size": len(data), "path": path}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: Hub

    def log_message(self, *args) -> None:  # quiet
        pass

    # ------------------------------------------------------------------ plumbing
    def _send(self, status: int, payload=None, *, raw: bytes | None = None, headers: dict | None = None, head: bool = False) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urllib.parse.urlsplit(self.path)
        path, query = urllib.parse.unquote(parts.path), urllib.parse.parse_qs(parts.query)
        with self.hub.lock:
            self.hub.log.append((method, path))
            self.hub.ranges.append((path, self.headers.get("Range")))
        try:
            self._route(method, path, query, body)
        except HubError as exc:
            headers = {"X-Error-Message": exc.message}
            if exc.code:
                headers["X-Error-Code"] = exc.code
            self._send(exc.status, {"error": exc.message}, headers=headers, head=method == "HEAD")

    def _authorize_write(self) -> None:
        if self.hub.token is not None and self.headers.get("Authorization") != f"Bearer {self.hub.token}":
            raise HubError(401, "invalid or missing token")

    # ------------------------------------------------------------------ routes
    def _route(self, method: str, path: str, query: dict, body: bytes) -> None:
        if path == "/api/whoami-v2":
            self._authorize_write()
            self._send(200, {"type": "user", "name": "tester", "orgs": [], "auth": {"accessToken": {"role": "write"}}})
            return
        if path == "/api/validate-yaml" and method == "POST":  # a card's metadata must be a YAML mapping
            self._validate_yaml(json.loads(body or b"{}").get("content", ""))
            return
        if path == "/api/repos/create" and method == "POST":
            self._create(json.loads(body or b"{}"))
            return
        for kind in ("datasets", "models"):
            api = f"/api/{kind}/"
            if path.startswith(api):
                self._api(kind, method, path[len(api):], query, body)
                return
        # /datasets/OWNER/NAME/resolve/REV/PATH or /OWNER/NAME/resolve/REV/PATH (models)
        kind, rest = ("datasets", path[len("/datasets/"):]) if path.startswith("/datasets/") else ("models", path[1:])
        pieces = rest.split("/", 4)
        if len(pieces) == 5 and pieces[2] == "resolve" and method in ("GET", "HEAD"):
            self._resolve(kind, f"{pieces[0]}/{pieces[1]}", pieces[3], pieces[4], head=method == "HEAD")
            return
        raise HubError(404, f"no route {method} {path}")

    def _api(self, kind: str, method: str, rest: str, query: dict, body: bytes) -> None:
        pieces = rest.split("/")
        repo = "/".join(pieces[:2])
        tail = pieces[2:]
        if not tail or tail[0] == "revision":
            revision = urllib.parse.unquote("/".join(tail[1:])) if tail else MAIN
            self.hub.check_revision(kind, repo, revision)
            self._send(200, self._info(kind, repo))
            return
        action, revision, sub = tail[0], tail[1] if len(tail) > 1 else MAIN, "/".join(tail[2:])
        if action == "tree" and method == "GET":
            self.hub.check_revision(kind, repo, revision)
            folder = self.hub.folder(kind, repo)
            base = folder / sub
            if not base.exists():
                raise HubError(404, f"{sub} not found", "EntryNotFound")
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            items = base.rglob("*") if recursive else base.iterdir()
            self._send(200, [_entry(folder, str(p.relative_to(folder))) for p in sorted(items)])
            return
        if action == "paths-info" and method == "POST":
            self.hub.check_revision(kind, repo, revision)
            folder = self.hub.folder(kind, repo)
            if self.headers.get("Content-Type", "").startswith("application/json"):
                paths = json.loads(body or b"{}").get("paths", [])
            else:
                paths = urllib.parse.parse_qs(body.decode()).get("paths", [])
            self._send(200, [_entry(folder, p) for p in paths if (folder / p).exists()])
            return
        if action == "preupload" and method == "POST":
            self._authorize_write()
            self.hub.check_revision(kind, repo, revision)
            files = json.loads(body or b"{}").get("files", [])
            self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
            return
        if action == "commit" and method == "POST":
            self._authorize_write()
            self.hub.check_revision(kind, repo, revision)
            self._commit(kind, repo, body)
            return
        raise HubError(404, f"no route {method} /api/{kind}/{rest}")

    def _info(self, kind: str, repo: str) -> dict:
        folder = self.hub.folder(kind, repo)
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        return {
            "_id": hashlib.sha1(repo.encode()).hexdigest()[:24], "id": repo, "author": repo.split("/")[0], "sha": self.hub.sha(kind, repo),
            "lastModified": now, "createdAt": now, "private": False, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
            "tags": [], "siblings": [{"rfilename": name, "size": (folder / name).stat().st_size} for name in self.hub.file_list(kind, repo)],
        }

    def _resolve(self, kind: str, repo: str, revision: str, name: str, head: bool) -> None:
        self.hub.check_revision(kind, repo, revision)
        target = self.hub.folder(kind, repo) / name
        if not target.is_file():
            raise HubError(404, f"{name} not found in {repo}", "EntryNotFound")
        data = target.read_bytes()
        headers = {"X-Repo-Commit": self.hub.sha(kind, repo), "ETag": f'"{_entry(self.hub.folder(kind, repo), name)["oid"]}"',
                   "Accept-Ranges": "bytes"}
        status = 200
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes=") and not head:
            first, _, last = wanted[len("bytes="):].partition("-")
            start = int(first) if first else max(0, len(data) - int(last))
            stop = min(len(data) - 1, int(last)) if first and last else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{stop}/{len(data)}"
            data, status = data[start:stop + 1], 206
        if head:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            return
        with self.hub.lock:
            self.hub.served[name] = self.hub.served.get(name, 0) + len(data)
        self._send(status, raw=data, headers=headers)

    def _validate_yaml(self, content: str) -> None:
        import yaml

        if content.startswith("---\n"):
            front = content[4:].split("\n---", 1)[0]
            try:
                data = yaml.safe_load(front)
            except yaml.YAMLError as exc:
                raise HubError(400, f"invalid YAML in the card: {exc}") from None
            if data is not None and not isinstance(data, dict):
                raise HubError(400, "the card's metadata is not a mapping")
        self._send(200, {"errors": [], "warnings": []})

    def _create(self, request: dict) -> None:
        self._authorize_write()
        kind = {"dataset": "datasets", "model": "models"}.get(request.get("type") or "model")
        if kind is None:
            raise HubError(400, f"unknown repo type {request.get('type')}")
        repo = f"{request.get('organization') or 'tester'}/{request['name']}"
        url = f"http://{self.headers.get('Host')}/{'datasets/' if kind == 'datasets' else ''}{repo}"
        if self.hub.exists(kind, repo):  # the Hub answers 409 with the existing repository's url
            self._send(409, {"error": "You already created this repo", "url": url}, headers={"X-Error-Message": "You already created this repo"})
            return
        self.hub.folder(kind, repo).mkdir(parents=True)
        self._send(200, {"url": url, "name": repo, "id": repo})

    def _commit(self, kind: str, repo: str, body: bytes) -> None:
        folder = self.hub.folder(kind, repo)
        header = {}
        written = []
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            value = item.get("value", {})
            if item.get("key") == "header":
                header = value
            elif item.get("key") == "file":
                target = folder / value["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                content = value["content"]
                target.write_bytes(base64.b64decode(content) if value.get("encoding", "base64") == "base64" else content.encode())
                written.append(value["path"])
            elif item.get("key") == "deletedFile":
                (folder / value["path"]).unlink(missing_ok=True)
            else:
                raise HubError(400, f"this fake Hub does not take {item.get('key')} operations")
        with self.hub.lock:
            self.hub.commits.append({"repo": repo, "kind": kind, "summary": header.get("summary"), "files": written})
        sha = self.hub.sha(kind, repo)
        prefix = "datasets/" if kind == "datasets" else ""
        self._send(200, {"commitUrl": f"http://{self.headers.get('Host')}/{prefix}{repo}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None})


class HubHandle:
    def __init__(self, hub: Hub, server: ThreadingHTTPServer):
        self.hub = hub
        self.server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"

    def client_env(self, home: Path | None = None) -> dict[str, str]:
        """Environment for an lt process talking to this Hub (its own HF cache, no offline mode)."""
        env = {"HF_ENDPOINT": self.url, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "0",
               "HF_DATASETS_OFFLINE": "0", "HF_HOME": str(home or self.hub.root.parent / "hf-home")}
        if self.hub.token:
            env["HF_TOKEN"] = self.hub.token
        return env

    def add_file(self, kind: str, repo: str, path: str, data: bytes) -> None:
        target = self.hub.folder(kind, repo) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def files(self, kind: str, repo: str) -> dict[str, bytes]:
        folder = self.hub.folder(kind, repo)
        return {name: (folder / name).read_bytes() for name in self.hub.file_list(kind, repo)}

    def requests(self) -> list[tuple[str, str]]:
        with self.hub.lock:
            return list(self.hub.log)

    def served_bytes(self, name: str) -> int:
        """Bytes of the file ``name`` (path in its repository) sent so far, over every request."""
        with self.hub.lock:
            return self.hub.served.get(name, 0)

    @property
    def commits(self) -> list[dict]:
        with self.hub.lock:
            return list(self.hub.commits)


@contextlib.contextmanager
def run_hub_server(root: Path, token: str | None = "hf_test_token_0123456789") -> Iterator[HubHandle]:
    """A fake Hub serving (and storing pushes in) ``root``, in a thread of this process."""
    root.mkdir(parents=True, exist_ok=True)
    hub = Hub(root, token)
    handler = type("BoundHandler", (Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield HubHandle(hub, server)
    finally:
        server.shutdown()
        server.server_close()
