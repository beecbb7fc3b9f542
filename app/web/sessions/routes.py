"""Dashboard and session pages: thin routes that read the database; workers do the cloud I/O.

Every live part of a page is a partial with its own fragment endpoint. A partial polls while its session can still
change (``views.is_polling``) and stops by itself once the session has ended. Detail-page sections send back the
``v`` they show; an unchanged section answers 204, so htmx leaves the DOM (scroll, selection, focus) untouched.
"""
from __future__ import annotations

from pathlib import Path

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask import session as flask_session
from flask_wtf.csrf import generate_csrf
from markupsafe import Markup
from werkzeug.wrappers import Response

from app.errors import UserError
from app.services import aider as aider_service
from app.services import cleanup as cleanup_service
from app.services import project_folders
from app.services import sessions as sessions_service
from app.services import tunnels as tunnels_service
from app.web import wants_partial
from app.models import Role
from app.web.access import actor, current_user, requires
from app.web.sessions import bp, page_cache, views
from app.web.sessions.forms import LaunchForm, SwitchModelForm
from app.web.errors import HTMX_STOP_POLLING
from app.web.sessions.sections import SECTIONS, live_parts_version, render_section, section_context


def _home() -> Path:
    return Path(current_app.config["MAIDER_HOME"])


def _load(name: str):
    """The session a page or partial shows: the exact row its ``uid`` names (pages and partials always send it),
    else the row the name addresses (the live one, or the newest ended one)."""
    uid = request.args.get("uid")
    return views.session_by_uid(name, uid) if uid else sessions_service.get_session(name)


def _acting_on(name: str) -> str:
    """The name an action may pass to a service: only when it still addresses the row the page shows, so a page
    of an ended session can never destroy or change a newer live session that took its name."""
    shown = _load(name)
    if shown.uid != sessions_service.get_session(name).uid:
        raise UserError(f"this page shows an earlier session named '{name}', which has ended; "
                        "open the live one from the dashboard")
    return name


def _unchanged(version: str) -> bool:
    return request.args.get("v") == version


def _moved(s: views.SessionView) -> bool:
    """The session changed state since the polling element was rendered: its neighbours should refresh now."""
    shown = request.args.get("shown")
    return shown is not None and shown != s.shown


def _with_trigger(body: str, event: str) -> Response:
    response = current_app.make_response(body)
    response.headers["HX-Trigger"] = event
    return response


@bp.get("/")
def index():
    """Show every live session with its cost, the totals, orphan VMs and the launch form."""
    # Only someone who may launch picks a launch folder: it names a folder on the owner's disk and reads its .env.
    user = current_user()
    may_launch = user is not None and user.role_enum.allows(Role.OPERATOR)
    csrf_secret = flask_session.get("csrf_token")
    if request.args or user is None or not csrf_secret or flask_session.get("_flashes"):
        return _dashboard(LaunchForm(), folder=request.args.get("workdir") if may_launch else None)
    page_key = page_cache.key(views.dashboard_version(), user.id, user.role, csrf_secret,
                              project_folders.folders_file(), request.host, bool(request.environ.get("maider.shared")))
    cached = page_cache.get(page_key)
    if cached is not None:
        return cached
    workdir = _chosen_folder(None)
    stamp = page_cache.env_stamp(workdir)  # before the render reads the folder's .env
    body = _dashboard(LaunchForm(), folder=workdir)
    page_cache.keep(page_key, workdir, body, stamp)
    return body


@bp.get("/live")
def live():
    """The dashboard tab's one live channel: 204 while what it shows is unchanged, else every part out of band."""
    version = views.dashboard_version()
    if _unchanged(version):
        return "", 204
    response = current_app.make_response(_live_parts(version, oob=True))
    response.headers["X-Live-Version"] = version
    return response


def _live_parts(version: str, oob: bool) -> Markup:
    """The totals, the session cards and the orphans as of ``version``: rendered once for every tab of a browser
    (the page and the live channel both show them), not once per request."""
    def render() -> str:
        overview = views.dashboard(current_app.config["MAIDER_HOME"])
        ended = views.recently_ended(overview.now)
        return render_template("sessions/_live.html", overview=overview, ended=ended, oob=oob,
                               list_v=views.list_version(overview.sessions, ended),
                               orphans_v=views.orphans_version(overview.orphans))

    user = current_user()
    generate_csrf()  # the empty state carries a CSRF token: one per browser (its cookie), not per request
    key = (version, oob, user.id if user else None, user.role if user else None, flask_session.get("csrf_token"),
           bool(current_app.config["MAIDER_DEMO"]))
    return Markup(views.rendered_once(key, render))


@bp.get("/sessions/list")
def session_list():
    """Return the list of session cards (204 while the set of sessions is unchanged)."""
    if _unchanged(views.live_list_version()):
        return "", 204
    overview = views.dashboard(current_app.config["MAIDER_HOME"])
    ended = views.recently_ended(overview.now)
    version = views.list_version(overview.sessions, ended)
    return render_template("sessions/_list.html", overview=overview, ended=ended, version=version)


@bp.get("/sessions/totals")
def totals():
    """Return the spend totals."""
    return render_template("sessions/_totals.html", overview=views.totals(current_app.config["MAIDER_HOME"]))


@bp.get("/sessions/orphans")
def orphans():
    """Return the orphan VMs panel (204 while unchanged)."""
    found = cleanup_service.orphans()
    if _unchanged(views.orphans_version(found)):
        return "", 204
    return _render_orphans(found)


@bp.post("/sessions")
def launch():
    """Request a launch from the quick form (empty fields come from the saved configuration)."""
    form = LaunchForm()
    error = None
    if form.validate_on_submit():
        try:
            workdir = _chosen_folder(form.workdir.data)
            session = sessions_service.request_launch(sessions_service.LaunchRequest(
                workdir=workdir, actor=actor(), name=form.name.data,
                model_id=form.model_id.data, region=form.region.data, plan=form.plan.data,
                max_model_len=form.max_model_len.data,
            ), home=_home(), demo=current_app.config["MAIDER_DEMO"])
        except UserError as exc:
            error = str(exc)
        else:
            project_folders.remember(workdir)
            views.forget_totals()
            if not wants_partial():
                flash(f"Launching {session.name}: the VM is being created.", "success")
                return redirect(url_for("sessions.index"), code=303)
            body = render_template("sessions/_launch.html", form=LaunchForm(formdata=None), launched=session,
                                   **_launch_context(workdir))
            return _with_trigger(body, "sessions-changed")
    if not wants_partial():
        return _dashboard(form, launch_error=error)
    return render_template("sessions/_launch.html", form=form, launch_error=error,
                           **_launch_context(form.workdir.data, lenient=True))


@bp.get("/launch")
@requires(Role.OPERATOR)
def launch_card():
    """Return the launch card for the project folder the user picked (its saved configuration). Only a launch
    remembers the folder: a look is not a choice."""
    try:
        context = _launch_context(request.args.get("workdir"))
        return render_template("sessions/_launch.html", form=LaunchForm(formdata=None), **context)
    except UserError as exc:
        return render_template("sessions/_launch.html", form=LaunchForm(formdata=None), folder_error=str(exc),
                               **_launch_context(None))


@bp.get("/sessions/<name>")
def detail(name: str):
    """Show one session: state, cost, timeline, tunnels, aider, Open WebUI, model switch, logs and events."""
    session = _load(name)
    live_v = live_parts_version(session)
    sections = {part: Markup(render_template(spec.template, **section_context(part, session)))
                for part, spec in SECTIONS.items()}
    return render_template("sessions/detail.html", s=views.view(session), sections=sections, live_v=live_v)


@bp.get("/sessions/<name>/live")
def live_session(name: str):
    """The session page's one live channel: the parts whose version moved, out of band; 204 while none did, 286
    (htmx: stop polling) once the session has ended and the page already shows its last state."""
    session = _load(name)
    shown = dict(part.split(":", 1) for part in (request.args.get("v") or "").split(",") if ":" in part)
    current = dict(part.split(":", 1) for part in live_parts_version(session).split(","))
    changed = [part for part, version in current.items() if shown.get(part) != version]
    if not changed:
        return "", (204 if views.is_polling(session) else HTMX_STOP_POLLING)
    bodies = []
    for part in changed:
        if part == "header":
            bodies.append(render_template("sessions/_header.html", s=views.view(session), oob=True))
        else:
            bodies.append(render_template(SECTIONS[part].template, **section_context(part, session, oob=True)))
    response = current_app.make_response("\n".join(bodies))
    response.headers["X-Live-Version"] = ",".join(f"{part}:{version}" for part, version in current.items())
    return response


@bp.get("/sessions/<name>/card")
def card(name: str):
    """Return the session's dashboard card (state, progress, cost)."""
    s = views.view(_load(name))
    body = render_template("sessions/_card.html", s=s, aider_command=aider_service.command_for(s.session))
    return _with_trigger(body, "totals-changed") if _moved(s) else body


@bp.get("/sessions/<name>/header")
def header(name: str):
    """Return the session page's header (state, progress, cost, actions)."""
    s = views.view(_load(name))
    body = render_template("sessions/_header.html", s=s)
    return _with_trigger(body, "session-changed") if _moved(s) else body


@bp.get("/sessions/<name>/sections/<section>")
def section(name: str, section: str):
    """Return one live section of the session page (204 while unchanged)."""
    if section not in SECTIONS:
        abort(404)
    return render_section(section, _load(name), request.args.get("v"))


@bp.delete("/sessions/<name>")
def destroy(name: str):
    """Request destruction of the session's VM; return the card or page header in its new state."""
    session = sessions_service.request_destroy(_acting_on(name), actor())
    views.forget_totals()
    if request.args.get("view") == "header":
        return _with_trigger(render_template("sessions/_header.html", s=views.view(session)), "session-changed")
    return _with_trigger(render_template("sessions/_card.html", s=views.view(session),
                                         aider_command=aider_service.command_for(session)), "totals-changed")


@bp.post("/sessions/<name>/extend")
def extend(name: str):
    """Reset the idle watchdog's timer."""
    session = sessions_service.extend(_acting_on(name), actor())
    return _with_trigger(render_template("sessions/_header.html", s=views.view(session),
                                         notice="Watchdog timer reset."), "session-changed")


@bp.post("/sessions/<name>/tunnel")
def reconnect(name: str):
    """Re-establish the session's SSH forwards on the same local ports."""
    session = _load(name)
    try:
        tunnels_service.request_reconnect(current_app._get_current_object(), _acting_on(name), actor())
    except UserError as exc:
        return render_section("tunnel", session, None, message=str(exc), level="error")
    return render_section("tunnel", _load(name), None, message="Reconnecting the tunnels…", level="info")


@bp.post("/sessions/<name>/model")
def switch_model(name: str):
    """Switch the VM to another model (validated first); progress shows while it loads."""
    form = SwitchModelForm()
    session = _load(name)
    if form.validate_on_submit():
        try:
            session = sessions_service.switch_model(_acting_on(name), form.model_id.data, home=_home(),
                                                    max_model_len=form.max_model_len.data, actor=actor())
        except UserError as exc:
            return render_section("switch", session, None, form=form, message=str(exc), level="error")
        return _with_trigger(render_section("switch", session, None), "session-changed")
    return render_section("switch", session, None, form=form)


@bp.post("/orphans/<int:orphan_id>/adopt")
def adopt_orphan(orphan_id: int):
    """Track an orphan VM as a session, so its cost shows and it can be destroyed."""
    cleanup_service.adopt_orphan(orphan_id, actor())
    return _orphans_changed()


@bp.delete("/orphans/<int:orphan_id>")
def destroy_orphan(orphan_id: int):
    """Destroy an orphan VM (tracked as a session until the provider confirms)."""
    cleanup_service.destroy_orphan(orphan_id, actor())
    return _orphans_changed()


def _orphans_changed() -> Response:
    views.forget_totals()
    return _with_trigger(_render_orphans(cleanup_service.orphans()), "sessions-changed")


def _render_orphans(found) -> str:
    return render_template("sessions/_orphans.html", orphans=found, version=views.orphans_version(found),
                           now=views.utcnow())


def _dashboard(form: LaunchForm, folder: str | None = None, **extra):
    live_v = views.dashboard_version()  # before reading: a change in between shows at the first poll
    spend = views.totals(current_app.config["MAIDER_HOME"])
    return render_template("sessions/index.html", live_parts=_live_parts(live_v, oob=False), burn_rate=spend.burn_rate,
                           form=form, **_launch_context(folder or form.workdir.data, lenient=True), live_v=live_v,
                           spend_days=spend.spend_days, **extra)


def _chosen_folder(folder: str | None, folders: list[str] | None = None) -> str:
    """The folder the user picked (checked: an existing folder of theirs), else the last one used, else the
    server's own."""
    return project_folders.chosen(folder, current_app.config["MAIDER_WORKDIR"], folders)


def _launch_context(folder: str | None, lenient: bool = False) -> dict:
    """What the launch card shows: the chosen folder's saved configuration, and the folders it can switch to."""
    folders = project_folders.known(current_app.config["MAIDER_WORKDIR"])
    try:
        workdir = _chosen_folder(folder, folders)
    except UserError:
        if not lenient:
            raise
        workdir = folders[0]
    return {"launch": views.launch_context(workdir, bool(current_app.config["MAIDER_DEMO"])), "folders": folders}
