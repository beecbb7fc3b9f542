"""``maider serve --share``: refused without a teammate and without TLS; with both, HTTPS for teammates under the
names it was started for, and the Host guard still refuses every other name. A real ``maider serve`` process."""
from __future__ import annotations

import os
import re
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from app import create_app
from app.cli import main
from app.extensions import db
from app.services import users as users_service
from app.tls import fingerprint_of
from engine_helpers import free_port

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
PASSWORD = "a teammate's long password"


def _add_teammate(data_home: Path, name: str = "ana") -> None:
    """A teammate who accepted an invite (as 'maider user add' + the invite page would leave them)."""
    app = create_app({"MAIDER_HOME": str(data_home)})
    with app.app_context():
        invite = users_service.add_user(name, "operator", actor="test")
        users_service.accept_invite(invite.token, PASSWORD, PASSWORD)
        db.session.remove()
        db.engine.dispose()


def _serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    env = {k: v for k, v in os.environ.items() if k not in ("LINODE_TOKEN", "MAIDER_PORT")}
    env.update(MAIDER_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO), HOME=str(tmp_path / "user"),
               HF_HUB_OFFLINE="1")
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(PYTHON), "-c", "from app.cli import main; main()", "serve", "--demo",
                                    "--no-workers", *args], cwd=tmp_path, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    return process, log


def _wait_for(log: Path, process: subprocess.Popen, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        if process.poll() is not None:
            return content
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared:\n{log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_share_is_refused_while_nobody_but_the_owner_can_sign_in(tmp_path):
    process, log = _serve(tmp_path, "--port", str(free_port()), "--share", "--host", "127.0.0.1",
                          "--share-port", str(free_port()), "--name", "localhost")
    assert process.wait(timeout=30) == 1
    assert "--share needs at least one teammate" in log.read_text()


def test_plain_http_on_another_address_is_refused():
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--port", "18999"])
    assert result.exit_code == 1 and "refusing to serve plain HTTP on 0.0.0.0" in result.output


def test_a_certificate_without_its_key_is_refused(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    result = CliRunner().invoke(main, ["serve", "--share", "--tls-cert", str(cert)])
    assert result.exit_code == 1 and "give both --tls-cert and --tls-key" in result.output


@pytest.mark.slow
def test_share_serves_https_to_a_teammate_and_refuses_other_names(tmp_path):
    _add_teammate(tmp_path / "home" / "demo")
    port, share_port = free_port(), free_port()
    process, log = _serve(tmp_path, "--port", str(port), "--share", "--host", "127.0.0.1",
                          "--share-port", str(share_port), "--name", "localhost")
    try:
        output = _wait_for(log, process, "Shared with your team")
        assert f"Shared with your team at https://localhost:{share_port}/" in output
        cert = tmp_path / "home" / "tls" / "cert.pem"
        assert fingerprint_of(cert) in output
        assert (cert.parent / "key.pem").stat().st_mode & 0o777 == 0o600

        base = f"https://localhost:{share_port}"
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=10) as teammate:
            page = teammate.get(f"{base}/")
            assert page.status_code == 401 and "Sign in" in page.text  # no dashboard before signing in
            token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
            # Over HTTPS, Flask-WTF also wants a same-origin Referer (browsers send one; a cross-site form cannot).
            signed_in = teammate.post(f"{base}/login", data={"name": "ana", "password": PASSWORD,
                                                             "csrf_token": token}, headers={"Referer": f"{base}/"})
            assert signed_in.status_code == 303
            cookie = signed_in.headers["set-cookie"]
            assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
            dashboard = teammate.get(f"{base}/")
            assert dashboard.status_code == 200 and "ana" in dashboard.text
            # A name the panel was not started for (DNS rebinding onto the shared address): refused.
            rebound = teammate.get(f"{base}/", headers={"Host": f"evil.example:{share_port}"})
            assert rebound.status_code == 403

        # The shared port speaks only TLS: plain HTTP gets no page.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{share_port}/login", timeout=5)
        # A client that does not trust the certificate is stopped by TLS itself.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/login", timeout=5)
        # The owner's loopback panel is unchanged.
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5).json()["service"] == "maider"
    finally:
        _stop(process)


def test_share_names_match_host_headers_as_browsers_send_them():
    from app.server import ShareOptions, _as_host_header
    from app.web.security import host_is_allowed

    allowed = frozenset(_as_host_header(n) for n in ("Laptop.Lan", "fd00::1", "[fd00::2]", "192.168.1.5"))
    assert host_is_allowed("laptop.lan:8443", allowed) and host_is_allowed("[fd00::1]:8443", allowed)
    assert host_is_allowed("[fd00::2]:8443", allowed) and host_is_allowed("192.168.1.5:8443", allowed)
    assert not host_is_allowed("evil.example:8443", allowed) and not host_is_allowed("[fd00::3]:8443", allowed)
    assert ShareOptions("::", 8443, ("fd00::1",)).url == "https://[fd00::1]:8443"
    assert ShareOptions("::", 8443, ("[fd00::1]",)).url == "https://[fd00::1]:8443"


def test_a_key_that_does_not_match_its_certificate_is_named(tmp_path):
    from app.tls import self_signed

    first = self_signed(tmp_path / "a", ["one.lan"])
    second = self_signed(tmp_path / "b", ["two.lan"])
    _add_teammate(tmp_path / "home" / "demo")
    process, log = _serve(tmp_path, "--port", str(free_port()), "--share", "--host", "127.0.0.1", "--share-port",
                          str(free_port()), "--name", "localhost", "--tls-cert", str(first.cert_path),
                          "--tls-key", str(second.key_path))
    assert process.wait(timeout=30) == 1
    assert "the certificate and key do not belong together" in log.read_text()
