"""A Hugging Face Hub stand-in on 127.0.0.1 for tests, driven by the real `huggingface_hub` client.

It implements what `huggingface_hub` 2.x calls to create a repo (`POST /api/repos/create`), commit files
(`/api/validate-yaml`, `/preupload`, `/commit` with regular, base64 uploads: the server answers every preupload
with `uploadMode: "regular"`, so no LFS / Xet transfer happens) and download a snapshot (repo info, tree listing,
`HEAD` / `GET /resolve/{revision}/{path}` with `X-Repo-Commit`, `ETag` and `Content-Length`), plus the
agent-harness registry the client fetches once per process for its user agent. Every commit keeps
its own file set, so downloads by commit hash see exactly that commit. Writes need the server's token; private
repos need it to read. Anything else gets a 501 and is recorded in `unhandled` (and printed), so a client change
shows up as a named failure.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
KIND = r"(?P<kind>models|datasets|spaces)"
USER = "tester"
"""Who the server's token belongs to: pushes go to tester/NAME."""

ROUTES = [
    ("POST", re.compile(r"/api/repos/create"), "create_repo"),
    ("POST", re.compile(r"/api/validate-yaml"), "validate_yaml"),
    ("GET", re.compile(r"/api/agent-harnesses"), "agent_harnesses"),
    ("GET", re.compile(r"/api/whoami-v2"), "whoami"),
    ("POST", re.compile(rf"/api/{KIND}/{REPO}/preupload/(?P<rev>[^/]+)"), "preupload"),
    ("POST", re.compile(rf"/api/{KIND}/{REPO}/commit/(?P<rev>[^/]+)"), "commit"),
    ("GET", re.compile(rf"/api/{KIND}/{REPO}(?:/revision/(?P<rev>[^/]+))?"), "repo_info"),
    ("GET", re.compile(rf"/api/{KIND}/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?"), "tree"),
    (
        "HEAD",
        re.compile(rf"/(?:(?P<kind>datasets|spaces)/)?{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"),
        "resolve",
    ),
    (
        "GET",
        re.compile(rf"/(?:(?P<kind>datasets|spaces)/)?{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"),
        "resolve",
    ),
]


def repo_key(repo_id: str, kind: str | None) -> str:
    """`hub.repos` keys: a model repo by its id, a dataset or Space repo as `datasets/<id>` or `spaces/<id>`."""
    return f"{kind}/{repo_id}" if kind in ("datasets", "spaces") else repo_id


class HubHTTPError(Exception):
    """An error answer: the Hub's X-Error-Code / X-Error-Message headers, and any extra JSON fields."""

    def __init__(
        self, status: int, message: str, code: str | None = None, commit: str | None = None, **extra
    ):
        super().__init__(message)
        self.status, self.code, self.commit, self.extra = status, code, commit, extra


@dataclass
class Repo:
    private: bool
    gated: bool = False
    sdk: str | None = None
    """A Space's SDK, as created."""
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    head: str = ""

    @property
    def files(self) -> dict[str, bytes]:
        return self.commits[self.head]

    def resolve(self, revision: str) -> str:
        revision = unquote(revision)
        if revision == "main":
            return self.head
        if revision in self.commits:
            return revision
        raise HubHTTPError(404, f"revision {revision} not found", "RevisionNotFound")


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeHub:
    """`with FakeHub(token) as hub:` serves on `hub.url`; `hub.repos` holds what was pushed."""

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []
        self.unhandled: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    # -- request handling -------------------------------------------------------------------------------------

    def _handler_class(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hub._dispatch(self, "GET")

            def do_HEAD(self):
                hub._dispatch(self, "HEAD")

            def do_POST(self):
                hub._dispatch(self, "POST")

            def log_message(self, format, *args):
                pass

        return Handler

    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = urlsplit(handler.path).path
        self.requests.append(f"{method} {path}")
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        try:
            for route_method, pattern, name in ROUTES:
                match = pattern.fullmatch(path)
                if route_method == method and match:
                    with self._lock:
                        status, headers, payload = getattr(self, name)(handler, match, body)
                    break
            else:
                self.unhandled.append(f"{method} {handler.path}")
                print(f"fake hub: unhandled request {method} {handler.path}", file=sys.stderr)
                raise HubHTTPError(501, f"fake hub does not implement {method} {path}")
        except HubHTTPError as err:
            status, payload = err.status, json.dumps({"error": str(err), **err.extra}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Message": str(err)}
            if err.code:
                headers["X-Error-Code"] = err.code
            if err.commit:
                headers["X-Repo-Commit"] = err.commit
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(payload))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if method != "HEAD":
            handler.wfile.write(payload)

    def _authorized(self, handler: BaseHTTPRequestHandler) -> bool:
        """Whether the request carries the server's token; a wrong token is rejected like the Hub does."""
        sent = handler.headers.get("Authorization")
        if sent is None:
            return False
        if sent != f"Bearer {self.token}":
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        return True

    def _repo(self, handler, match, write: bool = False, content: bool = False) -> Repo:
        """The repo a request names; `content`: a file download, which a gated repo refuses."""
        repo_id = match["repo"]
        authorized = self._authorized(handler)
        if write and not authorized:
            raise HubHTTPError(401, "write access needs a token")
        repo = self.repos.get(repo_key(repo_id, match["kind"]))
        if repo is None or (repo.private and not authorized):
            raise HubHTTPError(404, f"repository {repo_id} not found", "RepoNotFound")
        if content and repo.gated:
            raise HubHTTPError(403, f"access to {repo_id} is restricted: accept its conditions", "GatedRepo")
        return repo

    @staticmethod
    def _json(payload, status: int = 200):
        return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()

    def _new_commit(self, repo: Repo, files: dict[str, bytes]) -> str:
        sha = hashlib.sha1(f"{len(repo.commits)}:{sorted(files)}".encode()).hexdigest()
        repo.commits[sha] = files
        repo.head = sha
        return sha

    # -- endpoints ----------------------------------------------------------------------------------------------

    def create_repo(self, handler, match, body):
        if not self._authorized(handler):
            raise HubHTTPError(401, "creating a repo needs a token")
        request = json.loads(body)
        repo_id = f"{request['organization']}/{request['name']}"
        kind = {"dataset": "datasets", "space": "spaces"}.get(request.get("type"))
        if kind == "spaces" and request.get("sdk") not in ("gradio", "docker", "static"):
            raise HubHTTPError(400, "a Space needs its sdk: gradio, docker or static")
        key = repo_key(repo_id, kind)
        if key in self.repos:
            # The client reads the url from this answer when it creates with exist_ok=True.
            raise HubHTTPError(409, "You already created this model repo", url=f"{self.url}/{repo_id}")
        repo = self.repos[key] = Repo(private=request.get("visibility") == "private", sdk=request.get("sdk"))
        self._new_commit(repo, {})
        return self._json({"url": f"{self.url}/{repo_id}", "name": repo_id})

    def validate_yaml(self, handler, match, body):
        return self._json({"errors": [], "warnings": []})

    def agent_harnesses(self, handler, match, body):
        """The registry the client reads to name an AI agent in its user agent: empty here."""
        return self._json({"standardEnvVars": [], "harnesses": {}})

    def whoami(self, handler, match, body):
        """The token's owner: user `USER` with a write token (a wrong or missing token is a 401)."""
        if not self._authorized(handler):
            raise HubHTTPError(401, "whoami needs a token")
        return self._json(
            {"type": "user", "name": USER, "orgs": [], "auth": {"accessToken": {"role": "write"}}}
        )

    def preupload(self, handler, match, body):
        self._repo(handler, match, write=True).resolve(match["rev"])
        files = json.loads(body)["files"]
        return self._json(
            {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
        )

    def commit(self, handler, match, body):
        repo = self._repo(handler, match, write=True)
        files = dict(repo.commits[repo.resolve(match["rev"])])
        for line in body.splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                files.pop(value["path"])
            elif item["key"] != "header":
                self.unhandled.append(f"commit operation {item['key']}")
                raise HubHTTPError(501, f"fake hub does not implement commit operation {item['key']!r}")
        sha = self._new_commit(repo, files)
        return self._json({"commitUrl": f"{self.url}/{match['repo']}/commit/{sha}", "commitOid": sha})

    def repo_info(self, handler, match, body):
        repo = self._repo(handler, match)
        sha = repo.resolve(match["rev"] or "main")
        siblings = [
            {"rfilename": path, "size": len(data)} for path, data in sorted(repo.commits[sha].items())
        ]
        return self._json({"id": match["repo"], "sha": sha, "private": repo.private, "siblings": siblings})

    def tree(self, handler, match, body):
        """A folder's entries (all files below it with `recursive=true`); 404 for a folder that is not there."""
        repo = self._repo(handler, match)
        files = repo.commits[repo.resolve(match["rev"])]
        prefix = unquote(match["path"]) + "/" if match["path"] else ""
        below = {path: content for path, content in files.items() if path.startswith(prefix)}
        if prefix and not below:
            raise HubHTTPError(404, f"{prefix} not found", "EntryNotFound")
        recursive = parse_qs(urlsplit(handler.path).query).get("recursive") in (["true"], ["True"])
        entries = [
            {"type": "file", "path": path, "size": len(content), "oid": git_blob_id(content)}
            for path, content in sorted(below.items())
            if recursive or "/" not in path.removeprefix(prefix)
        ]
        if not recursive:
            folders = {
                prefix + path.removeprefix(prefix).split("/")[0]
                for path in below
                if "/" in path.removeprefix(prefix)
            }
            entries += [
                {"type": "directory", "path": folder, "oid": git_blob_id(folder.encode())}
                for folder in sorted(folders)
            ]
        return self._json(entries)

    def resolve(self, handler, match, body):
        repo = self._repo(handler, match, content=True)
        sha = repo.resolve(match["rev"])
        path = unquote(match["path"])
        if path not in repo.commits[sha]:
            raise HubHTTPError(404, f"{path} not found", "EntryNotFound", commit=sha)
        content = repo.commits[sha][path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_id(content)}"'}
        return 200, headers, content


@contextlib.contextmanager
def client_pointed_at(server: FakeHub, home: Path):
    """The real `huggingface_hub` (and transformers) talking to `server` with its token, online.

    huggingface_hub read HF_ENDPOINT, HF_HUB_OFFLINE, ... at import, so its constants are patched along with the
    environment (subprocesses get the environment alone). transformers keeps one HfApi, bound to the endpoint
    of its first use, for the whole process: it starts afresh here and is put back afterwards.
    """
    import transformers.utils.hub
    from huggingface_hub import constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_TOKEN", server.token)
        patch.setenv("HF_ENDPOINT", server.url)
        for offline in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            patch.delenv(offline, raising=False)
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        patch.setattr(transformers.utils.hub, "_hf_api", None)
        patch.setattr(constants, "ENDPOINT", server.url)
        patch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        patch.setattr(constants, "HF_TOKEN_PATH", str(home / "no_saved_token"))
        patch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / "agent_harnesses.json"))
        yield
