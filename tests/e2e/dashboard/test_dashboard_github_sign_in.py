"""Signing in with GitHub from the dashboard, end to end in a browser: the gateway's OAuth flow
against a small local fake of GitHub's OAuth endpoints (a browser cannot be served by respx),
back to the dashboard with a one-time code, signed in on the page that was asked for."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import docker
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import BUILD_IMAGE
from tests.e2e.dashboard.browsing import dashboard_url
from tests.e2e.stack import Stack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CLIENT_ID = "fake-github-client"
CLIENT_SECRET = "fake-github-secret"
ACCESS_TOKEN = "gho_fake_access_token"
GITHUB_USER = {"id": 4242, "login": "octo-dev", "name": "Octo Dev", "email": None}
GITHUB_EMAILS = [{"email": "octo@example.com", "primary": True, "verified": True}]


class FakeGitHub(BaseHTTPRequestHandler):
    """GitHub's authorize page (which approves at once), token exchange and user API."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        if url.path == "/login/oauth/authorize":
            assert query["client_id"] == CLIENT_ID
            assert query.get("code_challenge"), "the sign-in uses PKCE"
            back = {"code": "fake-authorization-code", "state": query["state"]}
            self.send_response(302)
            self.send_header("Location", f"{query['redirect_uri']}?{urlencode(back)}")
            self.end_headers()
        elif url.path in ("/user", "/user/emails"):
            if self.headers.get("Authorization", "").split()[-1:] != [ACCESS_TOKEN]:
                self._json(401, {"message": "Bad credentials"})
            else:
                self._json(200, GITHUB_USER if url.path == "/user" else GITHUB_EMAILS)
        else:
            self._json(404, {"message": "Not Found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = parse_qs(self.rfile.read(length).decode())
        if self.path != "/login/oauth/access_token" or form.get("code") != [
            "fake-authorization-code"
        ]:
            self._json(400, {"error": "bad_verification_code"})
            return
        self._json(200, {"access_token": ACCESS_TOKEN, "token_type": "bearer", "scope": "user"})

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def fake_github() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, fake_github: str) -> Iterator[Stack]:
    """`gobuild dev` with GitHub sign-in configured against the fake."""
    docker.from_env().images.get(BUILD_IMAGE)
    running = start_stack(
        tmp_path_factory.mktemp("gobuild"),
        BUILD_IMAGE,
        GOBUILD_GITHUB_CLIENT_ID=CLIENT_ID,
        GOBUILD_GITHUB_CLIENT_SECRET=CLIENT_SECRET,
        GOBUILD_GITHUB_URL=fake_github,
        GOBUILD_GITHUB_API_URL=fake_github,
    )
    yield running
    running.stop()


def test_github_sign_in_lands_signed_in_on_the_wanted_page_and_sign_out_ends_it(
    stack: Stack, page: Page
) -> None:
    page.goto(dashboard_url(stack, "/projects"))
    expect(page).to_have_url(re.compile(r"/sign-in\?next=%2Fprojects"))
    page.get_by_test_id("sign-in-github").click()

    expect(page).to_have_url(dashboard_url(stack, "/projects"))
    expect(page.get_by_test_id("signed-in-user")).to_have_text("octo-dev")
    me = stack.http.get("/api/users").json()["users"]
    assert [u["email"] for u in me if u["username"] == "octo-dev"] == ["octo@example.com"]

    page.get_by_test_id("sign-out").click()
    expect(page).to_have_url(re.compile(r"/sign-in"))
    page.goto(dashboard_url(stack, "/builds"))
    expect(page).to_have_url(re.compile(r"/sign-in\?next=%2Fbuilds"))
