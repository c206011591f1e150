"""A local stand-in for the Hugging Face Hub's HTTP API, on 127.0.0.1, for tests.

It speaks the part of the API that `huggingface_hub` and `datasets` use to download files, read
repo info and file trees, create repos, upload (preupload, LFS batch + PUT, commit) and set Space
variables, with the Hub's own error headers (`X-Error-Code`: RepoNotFound, RevisionNotFound,
EntryNotFound, GatedRepo), so that the project's real Hub code paths run against it through
`HF_ENDPOINT`. It keeps every commit in memory, so a test can push and then load by repo id,
branch, tag or commit, and read exactly which files a push carried.

Used as `with HubStandIn() as hub: hub.endpoint ...`; `hub.add_repo(...)` seeds a repo.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".parquet", ".arrow")
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files above 10 MB with LFS/Xet


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    type: str  # model, dataset or space
    id: str
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: bytes}
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> sha
    gated: bool = False  # gated: only the tokens in `granted` (users who accepted its conditions) may download
    granted: set[str] = field(default_factory=set)
    private: bool = False
    sdk: str | None = None
    variables: dict[str, str] = field(default_factory=dict)

    def commit(self, files: dict[str, bytes], branch: str = "main") -> str:
        parent = self.refs.get(branch, "")
        sha = hashlib.sha1((parent + json.dumps(sorted((p, git_blob_sha(b)) for p, b in files.items()))).encode()).hexdigest()
        self.commits[sha] = dict(files)
        self.refs[branch] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        matches = [sha for sha in self.commits if sha.startswith(revision)] if len(revision) >= 7 else []
        return matches[0] if len(matches) == 1 else None


class HubStandIn:
    """The Hub on 127.0.0.1: `endpoint` is its URL; `requests` logs (method, path) of every call."""

    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> bytes uploaded through the LFS batch API
        self.requests: list[tuple[str, str]] = []
        self.tokens = {"hf_standin_token"}  # tokens with write access
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- seeding and reading -------------------------------------------------------------------

    def add_repo(self, repo_id: str, files: dict[str, bytes] | None = None, repo_type: str = "model", **kw) -> Repo:
        repo = self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, **kw)
        if files is not None:
            repo.commit(files)
        return repo

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        repo = self.repo(repo_id, repo_type)
        return repo.commits[repo.resolve(revision)]

    # -- serving --------------------------------------------------------------------------------

    def __enter__(self) -> HubStandIn:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"


def front_matter_errors(readme: str, repo_type: str) -> list[str]:
    """What the Hub's metadata check would refuse in a README's YAML front matter (the parts this
    project writes: Space configuration, list fields, model-index)."""
    import yaml

    if not readme.startswith("---\n"):
        return []
    end = readme.find("\n---", 4)
    if end < 0:
        return ["the front matter has no closing ---"]
    try:
        meta = yaml.safe_load(readme[4:end]) or {}
    except yaml.YAMLError as err:
        return [f"invalid YAML: {err}"]
    if not isinstance(meta, dict):
        return ["the front matter is not a mapping"]
    errors = []
    if repo_type == "space":
        if meta.get("sdk") not in ("gradio", "streamlit", "docker", "static"):
            errors.append(f'"sdk" must be one of gradio, streamlit, docker, static; got {meta.get("sdk")!r}')
        for key in ("models", "datasets", "preload_from_hub", "tags"):
            if key in meta and not isinstance(meta[key], list):
                errors.append(f'"{key}" must be a list')
    for key in ("tags", "datasets", "language"):
        if key in meta and not isinstance(meta[key], (list, str)):
            errors.append(f'"{key}" must be a string or a list')
    for entry in meta.get("model-index") or []:
        for result in entry.get("results") or [None]:
            if not (isinstance(result, dict) and isinstance(result.get("task"), dict) and "type" in result["task"]
                    and isinstance(result.get("dataset"), dict) and {"name", "type"} <= set(result["dataset"])
                    and result.get("metrics") and all({"type", "value"} <= set(m) for m in result["metrics"])):
                errors.append('"model-index" results need task.type, dataset.name and .type, and metrics with type and value')
    return errors


def _split_repo(parts: list[str]) -> tuple[str, list[str]]:
    """('model'|'dataset'|'space', rest) from URL path parts that start with an optional type."""
    if parts and parts[0] in ("datasets", "spaces", "models"):
        return parts[0][:-1], parts[1:]
    return "model", parts


def _handler(hub: HubStandIn):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        # -- responses ----------------------------------------------------------------------

        def reply(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def json(self, value, status: int = 200, headers: dict | None = None):
            self.reply(status, json.dumps(value).encode(), headers)

        def error(self, status: int, code: str | None, message: str):
            headers = {"X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            self.json({"error": message}, status, headers)

        def token(self) -> str | None:
            auth = self.headers.get("Authorization") or ""
            return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

        def writer(self) -> bool:
            """Writes need a token (the Hub's answer without one: 401 with this message)."""
            if self.token() in hub.tokens:
                return True
            self.error(401, None, "Invalid credentials in Authorization header")
            return False

        def body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        # -- routing ------------------------------------------------------------------------

        def handle_any(self):
            url = urlparse(self.path)
            path, query = unquote(url.path), parse_qs(url.query)
            with hub._lock:
                hub.requests.append((self.command, path))
            parts = [p for p in path.split("/") if p]
            try:
                if parts[:1] == ["api"]:
                    return self.api(parts[1:], query)
                if parts[:1] == ["_lfs"] and self.command == "PUT":
                    data = self.body()
                    hub.lfs[hashlib.sha256(data).hexdigest()] = data
                    return self.reply(200)
                if "info" in parts and "lfs" in parts:
                    return self.lfs_batch(parts)
                return self.resolve_file(parts)
            except Exception as err:  # a bug in the stand-in: say so loudly
                self.json({"error": f"stand-in error: {type(err).__name__}: {err}"}, 500)

        do_GET = do_HEAD = do_POST = do_PUT = handle_any

        def find(self, repo_type: str, repo_id: str, revision: str | None = None):
            """(repo, commit sha) or an error already sent (returns None)."""
            repo = hub.repos.get((repo_type, repo_id))
            if repo is None or repo.private:
                self.error(401 if repo is None else 404, "RepoNotFound", "Repository not found")
                return None
            if repo.gated and self.token() not in repo.granted:
                self.error(403 if self.token() else 401, "GatedRepo", "Access to model is restricted; you must have access to it.")
                return None
            if revision is None:
                return repo, None
            sha = repo.resolve(revision)
            if sha is None:
                self.error(404, "RevisionNotFound", "Invalid rev id: " + revision)
                return None
            return repo, sha

        def resolve_file(self, parts: list[str]):
            repo_type, rest = _split_repo(parts)
            if "resolve" not in rest:
                return self.error(404, None, "Not found")
            i = rest.index("resolve")
            repo_id, revision, filename = "/".join(rest[:i]), rest[i + 1], "/".join(rest[i + 2:])
            found = self.find(repo_type, repo_id, revision)
            if found is None:
                return
            repo, sha = found
            files = repo.commits[sha]
            if filename not in files:
                return self.error(404, "EntryNotFound", f"{filename} does not exist on \"{revision}\"")
            data = files[filename]
            lfs = filename.endswith(LFS_SUFFIXES) or len(data) > LFS_THRESHOLD
            etag = hashlib.sha256(data).hexdigest() if lfs else git_blob_sha(data)
            headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"'}
            if lfs:
                headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
            self.reply(200, data, headers, content_type="application/octet-stream")

        def lfs_batch(self, parts: list[str]):
            request = json.loads(self.body())
            objects = []
            for obj in request.get("objects", []):
                entry = {"oid": obj["oid"], "size": obj["size"]}
                if obj["oid"] not in hub.lfs:
                    entry["actions"] = {"upload": {"href": f"{hub.endpoint}/_lfs/{obj['oid']}"}}
                objects.append(entry)
            self.json({"transfer": "basic", "objects": objects}, headers={"Content-Type": "application/vnd.git-lfs+json"})

        # -- the JSON API -------------------------------------------------------------------

        def api(self, parts: list[str], query: dict):
            if parts[:2] == ["repos", "create"] and self.command == "POST":
                if not self.writer():
                    return
                request = json.loads(self.body())
                repo_type = request.get("type") or "model"
                repo_id = (request["organization"] + "/" if request.get("organization") else "") + request["name"]
                if "/" not in repo_id:
                    repo_id = "standin-user/" + repo_id
                url = f"{hub.endpoint}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
                if (repo_type, repo_id) in hub.repos:
                    return self.json({"error": "You already created this repo", "url": url}, 409)
                repo = hub.add_repo(repo_id, repo_type=repo_type, private=False, sdk=request.get("sdk"))
                initial = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
                repo.commit(initial)
                return self.json({"url": url, "name": repo_id})
            if parts[:1] == ["validate-yaml"] and self.command == "POST":
                request = json.loads(self.body())
                errors = front_matter_errors(request["content"], request.get("repoType") or "model")
                return self.json({"errors": [{"message": e} for e in errors], "warnings": []}, 400 if errors else 200)
            if parts[:1] == ["whoami-v2"]:
                return self.json({"name": "standin-user", "type": "user", "auth": {}})
            if len(parts) < 3 or parts[0] not in ("models", "datasets", "spaces"):
                return self.error(404, None, "Not found")
            repo_type = parts[0][:-1]
            for verb in ("preupload", "commit", "revision", "tree", "paths-info", "variables", "refs"):
                if verb in parts[1:]:
                    i = parts.index(verb)
                    repo_id, rest = "/".join(parts[1:i]), parts[i + 1:]
                    return getattr(self, "api_" + verb.replace("-", "_"))(repo_type, repo_id, rest, query)
            if self.command == "GET":  # repo info at main
                return self.api_revision(repo_type, "/".join(parts[1:]), ["main"], query)
            return self.error(404, None, "Not found")

        def api_revision(self, repo_type, repo_id, rest, query):
            found = self.find(repo_type, repo_id, "/".join(rest) or "main")
            if found is None:
                return
            repo, sha = found
            files = repo.commits[sha]
            info = {"id": repo_id, "_id": repo_id, "sha": sha, "private": repo.private, "gated": repo.gated,
                    "disabled": False, "downloads": 0, "likes": 0, "tags": [], "lastModified": "2026-11-27T00:00:00.000Z",
                    "createdAt": "2026-11-27T00:00:00.000Z",
                    "siblings": [{"rfilename": p, "size": len(b)} for p, b in sorted(files.items())]}
            if repo.sdk:
                info["sdk"] = repo.sdk
            self.json(info)

        def api_refs(self, repo_type, repo_id, rest, query):
            found = self.find(repo_type, repo_id)
            if found is None:
                return
            repo = found[0]
            self.json({"branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in repo.refs.items()],
                       "tags": [], "converts": []})

        def _entry(self, path: str, data: bytes | None) -> dict:
            if data is None:
                return {"type": "directory", "oid": git_blob_sha(path.encode()), "size": 0, "path": path}
            entry = {"type": "file", "oid": git_blob_sha(data), "size": len(data), "path": path}
            if path.endswith(LFS_SUFFIXES) or len(data) > LFS_THRESHOLD:
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            return entry

        def _listing(self, files: dict[str, bytes], base: str, recursive: bool) -> list[dict]:
            base = base.strip("/")
            prefix = base + "/" if base else ""
            entries, dirs = [], set()
            for path, data in sorted(files.items()):
                if not path.startswith(prefix):
                    continue
                rel = path[len(prefix):].split("/")
                for depth in range(1, len(rel)):
                    d = prefix + "/".join(rel[:depth])
                    if (recursive or depth == 1) and d not in dirs:
                        dirs.add(d)
                        entries.append(self._entry(d, None))
                if recursive or len(rel) == 1:
                    entries.append(self._entry(path, data))
            return entries

        def api_tree(self, repo_type, repo_id, rest, query):
            revision, base = rest[0], "/".join(rest[1:])
            found = self.find(repo_type, repo_id, revision)
            if found is None:
                return
            repo, sha = found
            files = repo.commits[sha]
            if base and base not in files and not any(p.startswith(base.rstrip("/") + "/") for p in files):
                return self.error(404, "EntryNotFound", f"{base} does not exist")
            self.json(self._listing(files, base, query.get("recursive", ["false"])[0] in ("true", "1", "True")))

        def api_paths_info(self, repo_type, repo_id, rest, query):
            found = self.find(repo_type, repo_id, rest[0])
            if found is None:
                return
            repo, sha = found
            files = repo.commits[sha]
            body = self.body()
            ctype = self.headers.get("Content-Type", "")
            if "json" in ctype:
                paths = json.loads(body).get("paths", [])
            else:
                paths = parse_qs(body.decode()).get("paths", [])
            out = []
            for p in paths:
                p = p.strip("/")
                if p in files:
                    out.append(self._entry(p, files[p]))
                elif any(f.startswith(p + "/") for f in files) or p == "":
                    out.append(self._entry(p, None))
            self.json(out)

        def api_preupload(self, repo_type, repo_id, rest, query):
            if not self.writer():
                return
            if self.find(repo_type, repo_id) is None:
                return
            request = json.loads(self.body())
            modes = []
            for f in request.get("files", []):
                binary = b"\0" in base64.b64decode(f.get("sample", ""))
                lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > LFS_THRESHOLD or binary
                modes.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
            self.json({"files": modes, "commitOid": hub.repos[(repo_type, repo_id)].refs.get(rest[0] if rest else "main")})

        def api_commit(self, repo_type, repo_id, rest, query):
            if not self.writer():
                return
            found = self.find(repo_type, repo_id)
            if found is None:
                return
            repo = found[0]
            branch = rest[0] if rest else "main"
            files = dict(repo.commits.get(repo.refs.get(branch, ""), {}))
            for line in self.body().decode().splitlines():
                if not line.strip():
                    continue
                op = json.loads(line)
                kind, value = op["key"], op["value"]
                if kind == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif kind == "lfsFile":
                    if value["oid"] not in hub.lfs:
                        return self.error(400, None, f"LFS object {value['oid']} was never uploaded")
                    files[value["path"]] = hub.lfs[value["oid"]]
                elif kind == "deletedFile":
                    files.pop(value["path"], None)
                elif kind == "deletedFolder":
                    files = {p: b for p, b in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            sha = repo.commit(files, branch)
            self.json({"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None})

        def api_variables(self, repo_type, repo_id, rest, query):
            if self.find(repo_type, repo_id) is None:
                return
            repo = hub.repos[(repo_type, repo_id)]
            if self.command == "POST":
                if not self.writer():
                    return
                request = json.loads(self.body())
                repo.variables[request["key"]] = request["value"]
            self.json({k: {"value": v} for k, v in repo.variables.items()})

    return Handler
