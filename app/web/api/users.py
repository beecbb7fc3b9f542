"""Users and sign-in links over the API, for ``maider open`` and ``maider user ...``.

Only the holder of the API token (the laptop's owner, through the CLI) reaches these; they act as the owner.
Invite links and proxy keys are returned once, in the answer, and never stored in plain text.
"""
from __future__ import annotations

from flask import current_app, jsonify, request, url_for

from app.errors import NotFoundError

from app.services import users as users_service
from app.web import schemas
from app.web.api import bp, openapi
from app.web.api.actor import api_actor

USER_NAME = schemas.Text(users_service.USER_NAME_RE.pattern, 40,
                         "use a lowercase letter first, then letters, digits, '.', '_' or '-' (at most 40)", "ana")
ROLE = schemas.Text(r"viewer|operator|admin", 8, "use viewer, operator or admin", "operator")
NEW_USER = schemas.Body("NewUser", {"name": USER_NAME, "role": ROLE}, required=("name",),
                        descriptions={"role": "default: viewer"})
ROLE_CHANGE = schemas.Body("RoleChange", {"role": ROLE}, required=("role",))


def panel_url(path: str) -> str:
    """An absolute panel URL: on the shared (HTTPS) address when sharing, else on loopback."""
    base = current_app.config.get("MAIDER_PUBLIC_URL") or _local_base()
    return base.rstrip("/") + path


def _local_base() -> str:
    return (current_app.config.get("MAIDER_LOCAL_URL") or request.host_url).rstrip("/")


def _user_json(user) -> dict:
    state = "owner" if user.is_owner else "active" if user.password_hash else "invited"
    return {"name": user.name, "role": user.role, "state": state,
            "api_key_prefix": users_service.api_key_prefix(user),
            "last_login_at": user.last_login_at.isoformat() + "Z" if user.last_login_at else None}


@bp.post("/login-link")
def login_link():
    """A new one-time sign-in link for the owner's browser (``maider open``)."""
    token = current_app.extensions["maider_login_links"].mint()
    return jsonify({"url": f"{_local_base()}{url_for('auth.login', token=token)}"}), 201


@bp.get("/users")
def list_users():
    """Everyone who may sign in, with role and state (no secret)."""
    return jsonify({"users": [_user_json(u) for u in users_service.list_users()]})


@bp.post("/users")
def add_user():
    """Add a teammate; the answer carries their single-use invite link (24 h)."""
    body = NEW_USER.parse(schemas.json_body())
    invite = users_service.add_user(body["name"], body["role"] or "viewer", api_actor())
    return jsonify({"user": _user_json(invite.user),
                    "invite_url": panel_url(url_for("auth.invite", token=invite.token))}), 201


@bp.post("/users/<user>/invite")
def reinvite_user(user: str):
    """A fresh invite link (earlier ones stop working)."""
    invite = users_service.reinvite(_existing_name(user), api_actor())
    return jsonify({"user": _user_json(invite.user),
                    "invite_url": panel_url(url_for("auth.invite", token=invite.token))}), 201


@bp.post("/users/<user>/role")
def change_role(user: str):
    """Give a teammate another role (their browsers sign in again)."""
    body = ROLE_CHANGE.parse(schemas.json_body())
    return jsonify({"user": _user_json(users_service.set_role(_existing_name(user), body["role"], api_actor()))})


@bp.post("/users/<user>/key")
def new_key(user: str):
    """A new proxy API key for the user (replacing theirs); returned once."""
    holder = users_service.get_user(_existing_name(user))
    key = users_service.create_api_key(holder, api_actor())
    return jsonify({"user": _user_json(holder), "key": key}), 201


@bp.delete("/users/<user>")
def remove_user(user: str):
    """Remove a teammate: their sign-ins and key stop working at once."""
    users_service.remove_user(_existing_name(user), api_actor())
    return jsonify({"removed": user})


def _existing_name(name: str) -> str:
    """A path name that cannot be a user is simply not found (404), like any unknown name."""
    try:
        return USER_NAME.check(name)
    except ValueError:
        raise NotFoundError(f"no user named {name[:40]!r} (see 'maider user list')") from None


_USER_OBJECT = {"type": "object", "required": ["name", "role", "state", "api_key_prefix", "last_login_at"],
                "properties": {"name": USER_NAME.schema(), "role": {"type": "string", "enum": ["viewer", "operator",
                                                                                            "admin"]},
                               "state": {"type": "string", "enum": ["owner", "active", "invited"]},
                               "api_key_prefix": {"type": "string", "nullable": True},
                               "last_login_at": {"type": "string", "format": "date-time", "nullable": True}}}
openapi.register(path_params={"user": USER_NAME.schema()}, schemas={
    "LoginLink": {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}},
    "UserList": {"type": "object", "required": ["users"], "properties": {"users": {"type": "array",
                                                                                    "items": _USER_OBJECT}}},
    "UserAnswer": {"type": "object", "required": ["user"], "properties": {"user": _USER_OBJECT}},
    "Invite": {"type": "object", "required": ["user", "invite_url"],
               "properties": {"user": _USER_OBJECT, "invite_url": {"type": "string"}}},
    "NewKey": {"type": "object", "required": ["user", "key"],
               "properties": {"user": _USER_OBJECT, "key": {"type": "string"}}},
    "Removed": {"type": "object", "required": ["removed"], "properties": {"removed": {"type": "string"}}},
    NEW_USER.title: NEW_USER.schema(),
    ROLE_CHANGE.title: ROLE_CHANGE.schema(),
}, operations={
    "api.login_link": openapi.Operation("A new one-time sign-in link for the owner's browser", (201, "LoginLink")),
    "api.list_users": openapi.Operation("Everyone who may sign in, with role and state", (200, "UserList")),
    "api.add_user": openapi.Operation("Add a teammate; the answer carries their single-use invite link",
                                      (201, "Invite"), errors=(409, 413), body=NEW_USER),
    "api.reinvite_user": openapi.Operation("A fresh invite link for a teammate", (201, "Invite"), errors=(422,)),
    "api.change_role": openapi.Operation("Give a teammate another role", (200, "UserAnswer"), errors=(413, 422),
                                         body=ROLE_CHANGE),
    "api.new_key": openapi.Operation("A new proxy API key for the user (shown once)", (201, "NewKey")),
    "api.remove_user": openapi.Operation("Remove a teammate", (200, "Removed"), errors=(422,)),
})
