"""End to end in headless Chromium: a virtual authenticator registers a passkey through the
API and completes a step-up with it, using the browser's own `navigator.credentials`."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import pytest

from api.app import build_runtime
from api.settings import Settings
from tests.conftest import LiveServer, MutableClock, free_port, require_service
from tests.integration.cdp import Browser, chromium_path

VIRTUAL_AUTHENTICATOR = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
    "automaticPresenceSimulation": True,
}


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    missing = None if chromium_path() else "not installed (apt-get install chromium)"
    require_service("chromium", missing)
    chromium = Browser(tmp_path / "profile")
    try:
        chromium.page("WebAuthn.enable", {"enableUI": False})
        chromium.page("WebAuthn.addVirtualAuthenticator", {"options": VIRTUAL_AUTHENTICATOR})
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[LiveServer]:
    """The service on the embedded default with development secrets, as a newcomer runs it."""
    port = free_port()
    settings = Settings.from_env(
        {
            "MFA_DATA_DIR": str(tmp_path / "var"),
            "MFA_WEBAUTHN_RP_ID": "localhost",
            "MFA_WEBAUTHN_ORIGINS": f"http://localhost:{port}",
        }
    )
    assert settings.development_secrets
    clock = MutableClock(datetime.now(UTC))
    server = LiveServer(runtime=build_runtime(settings, clock=clock), clock=clock).start(port)
    server.url = f"http://localhost:{port}"
    yield server
    server.stop()


@pytest.fixture
def other_origin() -> Iterator[str]:
    """A blank page on another localhost origin (same RP ID, different origin)."""

    class Blank(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>elsewhere</title><link rel='icon' href='data:,'>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Blank)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{server.server_address[1]}/"
    server.shutdown()


def test_a_passkey_registered_in_the_browser_completes_a_step_up_and_cannot_be_replayed(
    browser: Browser, demo_server: LiveServer, other_origin: str, tmp_path: Path
) -> None:
    browser.navigate(demo_server.url + "/demo/")
    user = browser.evaluate("mfaDemo.startSession('alice-browser')")
    assert user == "alice-browser"
    token = browser.evaluate("mfaDemo.state.token")

    saved = browser.evaluate("mfaDemo.registerPasskey()")
    assert saved["name"] == "Demo passkey"
    shot = browser.screenshot(tmp_path / "demo-after-passkey.png")
    assert shot.startswith(b"\x89PNG")
    assert len(shot) > 10_000
    assert "Passkey registered" in browser.evaluate("document.body.innerText")

    outcome = browser.evaluate("mfaDemo.stepUp()")
    result = outcome["result"]
    assert result["acr"] == "urn:mfa:acr:phishing-resistant"
    assert {"user", "mfa"} <= set(result["amr"])

    jwks = httpx.get(demo_server.url + "/.well-known/jwks.json").json()
    key = jwt.PyJWK.from_dict(jwks["keys"][0])
    claims = jwt.decode(result["step_up_token"], key.key, algorithms=["ES256"])
    assert claims["sub"] == "alice-browser"
    assert claims["acr"] == result["acr"]
    assert claims["amr"] == result["amr"]
    assert claims["exp"] - claims["auth_time"] == 300

    api = httpx.Client(base_url=demo_server.url, headers={"Authorization": f"Bearer {token}"})
    replay = api.post(
        "/mfa/step-up",
        json={"challenge_id": outcome["challenge_id"], "credential": outcome["credential"]},
    )
    assert replay.status_code == 409
    assert replay.json()["code"] == "challenge_used"

    challenge = api.post("/mfa/challenge", json={"method": "webauthn"}).json()
    browser.navigate(other_origin)
    foreign = browser.evaluate(f"""
        (async (options) => {{
          const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options);
          const credential = await navigator.credentials.get({{ publicKey }});
          return credential.toJSON();
        }})({json.dumps(challenge["options"])})
    """)
    refused = api.post(
        "/mfa/step-up", json={"challenge_id": challenge["challenge_id"], "credential": foreign}
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "invalid_code"
    api.close()


def test_the_demo_page_loads_without_console_errors(
    browser: Browser, demo_server: LiveServer
) -> None:
    browser.navigate(demo_server.url + "/demo/")
    browser.evaluate("mfaDemo.startSession('console-check')")
    setup = browser.evaluate("mfaDemo.setUpTotp()")
    assert setup["qr_svg"].startswith("<svg")
    browser.evaluate("mfaDemo.registerPasskey()")
    assert browser.console_errors() == []
