"""A tiny local stand-in for the Hugging Face Hub HTTP API, enough for `HfApi.create_repo` + `HfApi.upload_folder`.

It listens on 127.0.0.1 (ephemeral port) in a background thread, records every request and stops on `stop()` /
leaving the `with` block, or by itself after `lifetime` seconds. Emulated (huggingface_hub 1.x/2.x protocol):

- `POST /api/repos/create`: creates the repo (409 with the repo URL if it exists, as the Hub answers);
- `POST /api/validate-yaml`: checks that the README front matter is a YAML mapping;
- `GET /api/agent-harnesses`: an empty registry (huggingface_hub >= 1.x fetches it, best-effort, for its user agent);
- `POST /api/{type}s/{namespace}/{name}/preupload/{revision}`: answers `uploadMode: "regular"` for every file (so
  contents travel base64 in the commit payload) with the git oid of the stored file, if any, so that unchanged files
  are skipped client-side like on the Hub;
- `POST /api/{type}s/{namespace}/{name}/commit/{revision}`: parses the NDJSON payload, applies `file`,
  `deletedFile` and `deletedFolder` operations to the stored repo and answers a commit URL.

Not emulated (answered 404 and recorded): LFS / Xet uploads (`lfsFile` operations, `/info/lfs/objects/batch`, Xet
tokens), `repo_info` and other read endpoints, branches, pull requests, whoami. Requests with a body larger than
`max_body` are refused (413).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import yaml


_REPO_ROUTE = re.compile(r"^/api/(models|datasets|spaces)/([^/]+)/([^/]+)/(preupload|commit)/(.+)$")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names; the Authorization value is replaced by "<redacted>"
    authorization: str | None  # the Authorization value, kept apart so tests can check where a token went
    body: bytes

    def json(self):
        return json.loads(self.body)

    def ndjson(self) -> list[dict]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]


@dataclass
class Commit:
    repo_id: str
    revision: str
    header: dict
    operations: list[dict]  # raw NDJSON items after the header
    oid: str
    url: str

    def files(self) -> dict[str, bytes]:
        """`path -> decoded content` of the `file` operations."""
        return {
            op["value"]["path"]: base64.b64decode(op["value"]["content"])
            for op in self.operations
            if op["key"] == "file"
        }


@dataclass
class _State:
    endpoint: str = ""
    requests: list[RecordedRequest] = field(default_factory=list)
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    commits: list[Commit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def git_oid(content: bytes) -> str:
    """Git blob sha1, the oid the Hub reports for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeHub:
    """Context manager: `with FakeHub() as hub: ... hub.endpoint ... hub.requests ... hub.commits`."""

    def __init__(self, lifetime: float = 120.0, max_body: int = 20 * 1024 * 1024):
        self.lifetime = lifetime
        self.max_body = max_body
        self._state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # -------------------------------------------------------------- lifecycle

    def start(self) -> FakeHub:
        handler = type("Handler", (_Handler,), {"state": self._state, "max_body": self.max_body})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._state.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -------------------------------------------------------------- records

    @property
    def endpoint(self) -> str:
        return self._state.endpoint

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def commits(self) -> list[Commit]:
        with self._state.lock:
            return list(self._state.commits)

    def repo_files(self, repo_id: str) -> dict[str, bytes]:
        with self._state.lock:
            return dict(self._state.repos[repo_id])


class _Handler(BaseHTTPRequestHandler):
    state: _State
    max_body: int
    # One request per connection: no keep-alive connection outlives the server in the client's pool.
    protocol_version = "HTTP/1.0"
    timeout = 10  # a client that stalls mid-request is dropped after this many seconds

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr access log
        pass

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    # -------------------------------------------------------------- plumbing

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                total += size
                if total > self.max_body:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.max_body:
            return None
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        body = self._read_body()
        headers = {k.lower(): ("<redacted>" if k.lower() == "authorization" else v) for k, v in self.headers.items()}
        record = RecordedRequest(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query),
            headers=headers,
            authorization=self.headers.get("Authorization"),
            body=body if body is not None else b"",
        )
        with self.state.lock:
            self.state.requests.append(record)
        if body is None:
            self.close_connection = True
            return self._answer(413, {"error": "Payload too large for the fake hub"})
        try:
            status, payload, extra = self._route(record)
        except Exception as error:  # noqa: BLE001 - a bad request must not kill the server thread
            status, payload, extra = 400, {"error": f"{type(error).__name__}: {error}"}, {}
        self._answer(status, payload, extra)

    def _answer(self, status: int, payload, extra_headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (extra_headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    # -------------------------------------------------------------- API

    def _route(self, req: RecordedRequest):
        endpoint = self.state.endpoint
        if req.method == "POST" and req.path == "/api/repos/create":
            payload = req.json()
            if payload.get("type", "model") != "model":
                return 400, {"error": "the fake hub only hosts model repos"}, {}
            name, org = payload["name"], payload.get("organization")
            repo_id = f"{org}/{name}" if org else name
            url = f"{endpoint}/{repo_id}"
            with self.state.lock:
                if repo_id in self.state.repos:
                    return 409, {"error": "You already created this model repo", "url": url}, {}
                self.state.repos[repo_id] = {}
            return 200, {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]}, {}

        if req.method == "GET" and req.path == "/api/agent-harnesses":
            return 200, {"standardEnvVars": [], "harnesses": {}}, {}

        if req.method == "POST" and req.path == "/api/validate-yaml":
            content = req.json()["content"]
            match = re.match(r"^---\r?\n(.*?)\r?\n---\r?\n", content, re.DOTALL)
            if match is None:
                return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]}, {}
            try:
                metadata = yaml.safe_load(match.group(1))
            except yaml.YAMLError as error:
                return 400, {"errors": [{"message": f"invalid YAML: {error}"}]}, {}
            if not isinstance(metadata, dict):
                return 400, {"errors": [{"message": "metadata must be a YAML mapping"}]}, {}
            return 200, {"errors": [], "warnings": []}, {}

        route = _REPO_ROUTE.match(req.path)
        if req.method == "POST" and route is not None and route.group(1) == "models":
            repo_id, action, revision = f"{route.group(2)}/{route.group(3)}", route.group(4), route.group(5)
            with self.state.lock:
                repo = self.state.repos.get(repo_id)
            if repo is None:
                return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
            if revision != "main":
                return 404, {"error": f"Revision {revision} not found"}, {"X-Error-Code": "RevisionNotFound"}
            if action == "preupload":
                files = [
                    {
                        "path": f["path"],
                        "uploadMode": "regular",
                        "shouldIgnore": False,
                        "oid": git_oid(repo[f["path"]]) if f["path"] in repo else None,
                    }
                    for f in req.json()["files"]
                ]
                return 200, {"files": files, "commitOid": "0" * 40}, {}
            return self._commit(req, repo_id, repo, revision)

        return 404, {"error": f"The fake hub does not emulate {req.method} {req.path}"}, {}

    def _commit(self, req: RecordedRequest, repo_id: str, repo: dict[str, bytes], revision: str):
        items = req.ndjson()
        if not items or items[0].get("key") != "header":
            return 400, {"error": "the first NDJSON line must be the commit header"}, {}
        operations = items[1:]
        updated = dict(repo)
        for op in operations:
            key, value = op["key"], op["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    return 400, {"error": f"unsupported encoding {value.get('encoding')!r}"}, {}
                updated[value["path"]] = base64.b64decode(value["content"], validate=True)
            elif key == "deletedFile":
                updated.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                updated = {p: c for p, c in updated.items() if not p.startswith(prefix)}
            else:
                return 400, {"error": f"the fake hub does not support {key!r} operations (LFS/Xet)"}, {}
        oid = hashlib.sha1(req.body).hexdigest()
        url = f"{self.state.endpoint}/{repo_id}/commit/{oid}"
        with self.state.lock:
            self.state.repos[repo_id] = updated
            self.state.commits.append(Commit(repo_id, revision, items[0]["value"], operations, oid, url))
        return 200, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None}, {}


# ------------------------------------------------------------------------------------------------ network guard


@contextmanager
def only_loopback():
    """
    Refuse (and record) every outgoing connection or name lookup that is not for the loopback interface, from
    Python sockets in any thread, while the block runs. Yields the list of refused destinations.
    """
    refused: list[str] = []
    real_connect, real_connect_ex, real_getaddrinfo = (
        socket.socket.connect,
        socket.socket.connect_ex,
        socket.getaddrinfo,
    )

    def allowed(address) -> bool:
        if isinstance(address, (str, bytes)):  # AF_UNIX path
            return True
        return str(address[0]) in LOOPBACK_HOSTS

    def connect(sock, address):
        if not allowed(address):
            refused.append(repr(address))
            raise ConnectionRefusedError(f"only_loopback: refused connection to {address!r}")
        return real_connect(sock, address)

    def connect_ex(sock, address):
        if not allowed(address):
            refused.append(repr(address))
            raise ConnectionRefusedError(f"only_loopback: refused connection to {address!r}")
        return real_connect_ex(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and str(host if not isinstance(host, bytes) else host.decode()) not in LOOPBACK_HOSTS:
            refused.append(f"lookup {host}")
            raise socket.gaierror(socket.EAI_NONAME, f"only_loopback: refused lookup of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
    try:
        yield refused
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = (
            real_connect,
            real_connect_ex,
            real_getaddrinfo,
        )
