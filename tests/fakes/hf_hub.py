"""A local stand-in for the Hugging Face Hub endpoints huggingface_hub calls to size a model.

The real library talks HTTP to it (``HfApi(endpoint=...)`` or ``HF_ENDPOINT``):
- ``GET /api/models/<org>/<name>[/revision/<rev>]?blobs=True`` -> model info with sibling file sizes
  (``HfApi.model_info(files_metadata=True)``);
- ``HEAD``/``GET /<org>/<name>/resolve/<rev>/<file>`` -> the file, with ``X-Repo-Commit`` and ``ETag`` headers
  (``hf_hub_download``).

It behaves like the Hub where maider cares: an unknown repo is 401 ``RepoNotFound`` without a token and 404 with one;
a gated repo's info is public but its files answer ``GatedRepo`` (401 anonymous, 403 with a token that has not
accepted the licence) until the right token is sent. Every request is recorded with whether it was authenticated.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, jsonify, request

from fakes.serving import LoopbackServer


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]  # small files served for real (config.json)
    sizes: dict[str, int] = field(default_factory=dict)  # large files listed by size only (.safetensors shards)
    gated: bool = False
    params: int | None = None
    sha: str = ""

    def __post_init__(self) -> None:
        self.sha = self.sha or hashlib.sha1(self.repo_id.encode()).hexdigest()


@dataclass
class RecordedRequest:
    method: str
    path: str
    authorization: str | None


class FakeHfHub:
    """Serve fake repos on 127.0.0.1:<free port>; use as a context manager."""

    def __init__(self, allowed_token: str = "hf_right_token") -> None:
        self.allowed_token = allowed_token
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[RecordedRequest] = []
        self.fail_status: int | None = None  # answer every request with this HTTP status (e.g. 503) while set
        self.app = self._build_app()
        self._server: LoopbackServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.port}"

    def add_model(self, repo_id: str, config: dict[str, Any] | None, shard_sizes: list[int] | None = None,
                  gated: bool = False, params: int | None = None) -> FakeRepo:
        """Publish a repo with a config.json (None: no config) and .safetensors shards of the given sizes."""
        files = {"README.md": b"# model card\n"}
        if config is not None:
            files["config.json"] = json.dumps(config).encode()
        shards = shard_sizes or []
        sizes = {f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors": size for i, size in enumerate(shards)}
        repo = FakeRepo(repo_id, files, sizes, gated=gated, params=params)
        self.repos[repo_id.lower()] = repo
        return repo

    def __enter__(self) -> FakeHfHub:
        self._server = LoopbackServer(self.app, "fake-hf-hub")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def _token(self) -> str | None:
        header = request.headers.get("Authorization", "")
        return header.removeprefix("Bearer ").strip() or None

    def _build_app(self) -> Flask:
        app = Flask(__name__)

        @app.before_request
        def _record() -> Response | None:
            self.requests.append(RecordedRequest(request.method, request.path, request.headers.get("Authorization")))
            if self.fail_status is not None:
                return Response("injected failure", status=self.fail_status)
            return None

        def not_found(kind: str = "RepoNotFound") -> Response:
            status = 404 if self._token() or kind != "RepoNotFound" else 401  # the Hub hides existence from anonymous
            response = jsonify(error="Repository not found" if kind == "RepoNotFound" else "Entry not found")
            response.status_code = status
            response.headers["X-Error-Code"] = kind
            response.headers["X-Error-Message"] = response.json["error"]
            return response

        def gated_refusal(repo: FakeRepo) -> Response:
            response = jsonify(error=f"Access to model {repo.repo_id} is restricted. You must have access to it "
                                     "and be authenticated to access it. Please log in.")
            response.status_code = 403 if self._token() else 401
            response.headers["X-Error-Code"] = "GatedRepo"
            response.headers["X-Error-Message"] = "Access to this model is restricted"
            return response

        @app.get("/api/models/<org>/<name>")
        @app.get("/api/models/<org>/<name>/revision/<revision>")
        def model_info(org: str, name: str, revision: str = "main") -> Response:
            repo = self.repos.get(f"{org}/{name}".lower())
            if repo is None:
                return not_found()
            with_sizes = request.args.get("blobs", "").lower() == "true"
            siblings = [{"rfilename": n, **({"size": len(c)} if with_sizes else {})} for n, c in repo.files.items()]
            siblings += [{"rfilename": n, **({"size": s, "lfs": {"size": s, "sha256": "0" * 64, "pointerSize": 135}}
                                             if with_sizes else {})} for n, s in repo.sizes.items()]
            body: dict[str, Any] = {
                "_id": repo.sha[:24], "id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.sha,
                "private": False, "disabled": False, "gated": "manual" if repo.gated else False,
                "tags": ["safetensors"], "siblings": siblings, "lastModified": "2025-01-01T00:00:00.000Z",
            }
            if repo.params:
                body["safetensors"] = {"parameters": {"BF16": repo.params}, "total": repo.params}
            return jsonify(body)

        @app.route("/<org>/<name>/resolve/<revision>/<path:filename>", methods=["GET", "HEAD"])
        def resolve(org: str, name: str, revision: str, filename: str) -> Response:
            repo = self.repos.get(f"{org}/{name}".lower())
            if repo is None:
                return not_found()
            if repo.gated and self._token() != self.allowed_token:
                return gated_refusal(repo)
            if filename not in repo.files:
                response = not_found("EntryNotFound")
                response.headers["X-Repo-Commit"] = repo.sha
                return response
            content = repo.files[filename]
            response = Response(content, mimetype="application/octet-stream")
            response.headers["X-Repo-Commit"] = repo.sha
            response.headers["ETag"] = f'"{hashlib.sha1(content).hexdigest()}"'
            return response

        return app
