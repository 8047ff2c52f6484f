"""RFC 6749 test platform "Taskboard": boards and tasks in workspaces, behind OAuth 2.0.

Quirks (each one something real providers do):
- client_secret_post only (credentials in the form body; Basic is rejected with invalid_client);
- token responses carry `instance_url` (e.g. `http://127.0.0.1:PORT/ws/acme-ws`), and the API
  lives under it: `<instance_url>/api/...`. So `api_base` is per grant, not fixed;
- token responses OMIT `expires_in`, although access tokens still expire (after
  `access_token_ttl`): a client learns it from a 401 `invalid_token`;
- refresh tokens do NOT rotate: a refresh response has no `refresh_token`, keep the old one;
- NO revocation endpoint by default (`create_projects(revocation=False)`): disconnecting can only
  forget the tokens locally. `revocation=True` adds an RFC 7009 endpoint at `/oauth2/revoke`.
Scopes: `boards:read`, `tasks:write` (none requested → both).

Endpoints (`PROJECTS_ENDPOINTS`, paths relative to the server's base URL):

    authorize  /oauth2/authorize     token  /oauth2/token     revoke  None (or /oauth2/revoke)
    api_base   None: use `<instance_url>/api` from the token response

API (bearer token; a board is visible only to its owner, in the owner's workspace):

    GET  /ws/<ws>/api/me                          the caller's account
    GET  /ws/<ws>/api/boards                      the caller's boards         boards:read
    GET  /ws/<ws>/api/boards/<id>/tasks           owner only                  boards:read
    POST /ws/<ws>/api/boards/<id>/tasks           JSON {title, description?}; 201; owner only
                                                                              tasks:write

Seed data: workspace `acme-ws`; alice owns board `42` ("Launch plan"), bob owns board `43`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request

from authserver.testing.platforms import (
    DEFAULT_ACCESS_TOKEN_TTL,
    ApiError,
    OAuthProvider,
    Quirks,
)
from authserver.testing.server import ServerThread

WORKSPACE = "acme-ws"

PROJECTS_ENDPOINTS: dict[str, str | None] = {
    "authorize": "/oauth2/authorize",
    "token": "/oauth2/token",
    "revoke": None,
    "api_base": None,
}
REVOKE_PATH = "/oauth2/revoke"

USERS = {
    "alice": {"id": "U01ALICE", "username": "alice", "workspace": WORKSPACE},
    "bob": {"id": "U02BOB", "username": "bob", "workspace": WORKSPACE},
}

SEED_BOARDS: dict[str, dict[str, str]] = {
    "42": {"name": "Launch plan", "workspace": WORKSPACE, "owner": "alice"},
    "43": {"name": "Ops backlog", "workspace": WORKSPACE, "owner": "bob"},
}

SEED_TASKS: dict[str, list[dict[str, str]]] = {
    "42": [
        {"id": "t-1", "title": "Draft the announcement", "description": "", "created_by": "alice"}
    ],
    "43": [{"id": "t-2", "title": "Rotate the on-call", "description": "", "created_by": "bob"}],
}


def instance_url(provider: OAuthProvider, username: str) -> str:
    return f"{provider.request_base_url()}/ws/{USERS[username]['workspace']}"


def _instance_fields(provider: OAuthProvider, username: str) -> dict[str, str]:
    return {"instance_url": instance_url(provider, username)}


PROJECTS_QUIRKS = Quirks(
    realm="taskboard",
    client_auth_method="client_secret_post",
    scopes=("boards:read", "tasks:write"),
    rotate_refresh_tokens=False,
    include_expires_in=False,
    supports_revocation=False,
    extra_token_fields=_instance_fields,
)


class Projects(OAuthProvider):
    """Taskboard. `boards` and `tasks` are the live data (tests may read them)."""

    def __init__(self, *, revocation: bool = False, **options: Any) -> None:
        self.boards = copy.deepcopy(SEED_BOARDS)
        self.tasks = copy.deepcopy(SEED_TASKS)
        self._task_ids = itertools.count(100)
        # Instance attribute: the revoke path exists only when this instance supports it.
        self.endpoints = {**PROJECTS_ENDPOINTS, "revoke": REVOKE_PATH if revocation else None}
        quirks = dataclasses.replace(PROJECTS_QUIRKS, supports_revocation=revocation)
        super().__init__(quirks, USERS, **options)

    def _register_api(self, app: Flask) -> None:
        base = "/ws/<workspace>/api"

        @app.get(f"{base}/me")
        def me(workspace: str) -> Response:
            username = self._authenticate_in(workspace, "boards:read")
            return jsonify(USERS[username])

        @app.get(f"{base}/boards")
        def list_boards(workspace: str) -> Response:
            username = self._authenticate_in(workspace, "boards:read")
            with self.lock:
                boards = [
                    {"id": board_id, **board}
                    for board_id, board in self.boards.items()
                    if board["owner"] == username and board["workspace"] == workspace
                ]
            return jsonify(boards=boards)

        @app.get(f"{base}/boards/<board_id>/tasks")
        def list_tasks(workspace: str, board_id: str) -> Response:
            username = self._authenticate_in(workspace, "boards:read")
            with self.lock:
                self._check_owner(username, workspace, board_id)
                return jsonify(tasks=self.tasks.get(board_id, []))

        @app.post(f"{base}/boards/<board_id>/tasks")
        def create_task(workspace: str, board_id: str) -> tuple[Response, int]:
            username = self._authenticate_in(workspace, "tasks:write")
            body = request.get_json(silent=True)
            if not isinstance(body, dict) or not isinstance(body.get("title"), str):
                raise ApiError(
                    400,
                    "bad_request",
                    "A task needs a title.",
                    detail="TaskSerializer: 'title' missing (validator=tasks.v9)",
                )
            with self.lock:
                self._check_owner(username, workspace, board_id)
                task = {
                    "id": f"t-{next(self._task_ids)}",
                    "title": body["title"],
                    "description": str(body.get("description", "")),
                    "created_by": username,
                }
                self.tasks.setdefault(board_id, []).append(task)
            return jsonify(task), 201

    def _authenticate_in(self, workspace: str, required_scope: str) -> str:
        username = self.authenticate(required_scope)
        if USERS[username]["workspace"] != workspace:
            raise self.forbid(username, f"workspace/{workspace}")
        return username

    def _check_owner(self, username: str, workspace: str, board_id: str) -> None:
        board = self.boards.get(board_id)
        if board is None or board["workspace"] != workspace:
            raise ApiError(
                404,
                "not_found",
                "No such board.",
                detail=f"BoardLoader: miss for {workspace}/{board_id} (cache=redis-boards-2)",
            )
        if board["owner"] != username:
            raise self.forbid(username, f"board/{board_id}")


def create_projects(
    *,
    access_token_ttl: int = DEFAULT_ACCESS_TOKEN_TTL,
    auto_approve: bool = True,
    revocation: bool = False,
    clock: Callable[[], float] = time.time,
) -> Projects:
    return Projects(
        revocation=revocation,
        access_token_ttl=access_token_ttl,
        auto_approve=auto_approve,
        clock=clock,
    )


def start_projects(**options: Any) -> tuple[Projects, str, ServerThread]:
    """`create_projects(**options)` served on a loopback port; the caller stops the server."""
    projects = create_projects(**options)
    server = ServerThread(projects.app)
    projects.configure_base_url(server.base_url)
    return projects, server.start(), server
