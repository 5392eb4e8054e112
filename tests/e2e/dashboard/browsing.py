"""What the dashboard's browser tests do often: find the dashboard of a stack, add a user who
belongs to a project, sign in, wait for a build."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.e2e.stack import Stack

PASSWORD = "a-long-test-password"


def dashboard_url(stack: Stack, path: str = "") -> str:
    return f"http://localhost:{stack.env['GOBUILD_DASHBOARD_PORT']}{path}"


def add_user(stack: Stack, username: str, *, owner_of: tuple[str, ...] = ()) -> None:
    """A user with `PASSWORD`, owner of the given projects."""
    response = stack.http.post("/api/users", json={"username": username, "password": PASSWORD})
    assert response.status_code == 201, response.text
    for project_id in owner_of:
        response = stack.http.post(
            f"/api/projects/{project_id}/members", json={"username": username, "role": "owner"}
        )
        assert response.status_code in (200, 201), response.text


def sign_in(page: Page, username: str) -> None:
    """Fill in the sign-in form the page shows and wait until it leaves the sign-in page."""
    expect(page.get_by_test_id("username")).to_be_visible()
    page.get_by_test_id("username").fill(username)
    page.get_by_test_id("password").fill(PASSWORD)
    page.get_by_test_id("sign-in").click()
    page.wait_for_url(lambda url: "/sign-in" not in url)
    expect(page.get_by_test_id("signed-in-user")).to_have_text(username)


def log_texts(page: Page) -> list[str]:
    """The text of each console line the page holds, in order (its text content: a line
    scrolled out of view is not rendered, `content-visibility: auto`, and has no inner text)."""
    return page.locator("[data-testid=log] .gb-line .gb-text").all_text_contents()
