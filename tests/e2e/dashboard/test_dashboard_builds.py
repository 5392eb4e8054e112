"""The dashboard in a browser, against the whole stack: sign-in, the live builds list, the live
log (order, reload, carriage returns, errors, failed step), build output and commit messages
shown as text, share links, and promote / rollback / un-pin / redeploy."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.conftest import GitRepo
from tests.e2e.dashboard.browsing import add_user, dashboard_url, log_texts, sign_in
from tests.e2e.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SECRET = "e2e-webhook-secret-0123456789"
QUICK_TOML = """\
build = '''
mkdir -p dist && echo '<p>quick</p>' > dist/index.html
'''
output = "dist"
"""
# A numbered line every 200 ms, and markup that must stay text.
COUNTING_LINES = 60
COUNTING_TOML = f"""\
build = '''
echo '<img src=x onerror="window.__xss = 5">'
for i in $(seq 1 {COUNTING_LINES}); do echo "line $i"; sleep 0.2; done
mkdir -p dist && echo '<p>counted</p>' > dist/index.html
'''
output = "dist"
"""
# Progress output with carriage returns, markup, an error line, and a failing build step.
BROKEN_TOML = """\
install = '''printf 'fetching 10%%\\rfetching 55%%\\rfetching 100%%\\n'; echo installed'''
build = '''
echo '<script>window.__xss = 1</script>'
echo '<img src=x onerror="window.__xss = 2">'
echo "error: the build broke"
exit 3
'''
output = "dist"
"""
XSS_MESSAGE = 'Fix <img src=x onerror="window.__xss = 3"> and <script>window.__xss = 4</script>'
PAGE_TOML = """\
build = '''
mkdir -p dist
printf '<h1>commit %s</h1>\\n' "$GOBUILD_COMMIT_SHA" > dist/index.html
'''
output = "dist"
"""


def push(stack: Stack, repo: GitRepo, files: dict[str, str], message: str) -> tuple[str, str]:
    """Commit, push and deliver the webhook; (commit sha, build id)."""
    sha = repo.commit(files, message)
    response = stack.push_webhook(repo.bare, sha, SECRET)
    assert response.status_code == 202, response.text
    return sha, response.json()["build_id"]


def wait_for_log_line(page: Page, text: str, timeout: float = 60.0) -> list[str]:
    """The page's console lines once one of them is `text`."""
    deadline = time.monotonic() + timeout
    while True:
        lines = log_texts(page)
        if text in lines:
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(f"the page never showed {text!r}; it shows {lines[-20:]}")
        time.sleep(0.1)


def numbered(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if re.fullmatch(r"line \d+", line)]


def test_password_sign_in_then_a_webhook_build_appears_and_succeeds_without_reload(
    stack: Stack, git_repo: GitRepo, page: Page
) -> None:
    project = stack.create_project("livelist", git_repo.bare, SECRET)
    add_user(stack, "alice", owner_of=(project["id"],))

    # Not signed in: the sign-in page, then the page that was asked for.
    wanted = f"/builds?project={project['id']}"
    page.goto(dashboard_url(stack, wanted))
    expect(page).to_have_url(re.compile(r"/sign-in\?next="))
    sign_in(page, "alice")
    expect(page).to_have_url(dashboard_url(stack, wanted))
    expect(page.get_by_test_id("no-builds")).to_be_visible()
    page.evaluate("window.__not_reloaded = true")

    _, build_id = push(stack, git_repo, {"gobuild.toml": QUICK_TOML}, "first")

    row = page.locator(f"[data-build-id={build_id}]")
    expect(row).to_be_visible(timeout=60_000)
    expect(row.locator(".gb-state")).to_have_text("succeeded", timeout=120_000)
    assert page.evaluate("window.__not_reloaded") is True


def test_live_log_lines_arrive_in_order_and_a_reload_half_way_loses_and_repeats_none(
    stack: Stack, git_repo: GitRepo, page: Page
) -> None:
    project = stack.create_project("counting", git_repo.bare, SECRET)
    add_user(stack, "bob", owner_of=(project["id"],))
    page.goto(dashboard_url(stack, "/sign-in"))
    sign_in(page, "bob")

    _, build_id = push(stack, git_repo, {"gobuild.toml": COUNTING_TOML}, "count")
    page.goto(dashboard_url(stack, f"/builds/{build_id}"))

    # While the build runs, lines appear, in order, without a reload.
    seen = wait_for_log_line(page, "line 3")
    expect(page.get_by_test_id("build-state")).to_have_text("running")
    assert numbered(seen) == list(range(1, len(numbered(seen)) + 1)), seen
    assert len(numbered(seen)) < COUNTING_LINES
    later = wait_for_log_line(page, "line 12")
    assert numbered(later) == list(range(1, len(numbered(later)) + 1)), later

    page.reload()
    expect(page.get_by_test_id("build-state")).to_have_text("succeeded", timeout=120_000)
    lines = wait_for_log_line(page, f"line {COUNTING_LINES}")
    assert numbered(lines) == list(range(1, COUNTING_LINES + 1)), lines
    line_numbers = page.locator("[data-testid=log] .gb-line .gb-ln").all_text_contents()
    assert line_numbers == [str(n) for n in range(1, len(line_numbers) + 1)]
    # Build output is text: the markup is shown and nothing ran.
    assert '<img src=x onerror="window.__xss = 5">' in lines
    assert page.locator("[data-testid=log] img").count() == 0
    assert page.evaluate("window.__xss") is None


@dataclass
class FailedBuild:
    project_id: str
    build_id: str
    username: str


@pytest.fixture(scope="module")
def failed_build(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> FailedBuild:
    """A build whose install step prints progress and whose build step prints markup and an
    error, then fails; its commit message carries markup too."""
    repo = GitRepo.create(tmp_path_factory.mktemp("broken"))
    project = stack.create_project("broken", repo.bare, SECRET)
    add_user(stack, "carol", owner_of=(project["id"],))
    sha = repo.commit({"gobuild.toml": BROKEN_TOML}, XSS_MESSAGE)
    usual = stack.push_payload["head_commit"]["message"]
    stack.push_payload["head_commit"]["message"] = XSS_MESSAGE
    try:
        response = stack.push_webhook(repo.bare, sha, SECRET)
    finally:
        stack.push_payload["head_commit"]["message"] = usual
    assert response.status_code == 202, response.text
    build = stack.wait_for_build(response.json()["build_id"])
    assert build["state"] == "failed", build
    return FailedBuild(project["id"], build["id"], "carol")


def test_progress_is_one_line_errors_are_highlighted_and_listed_and_the_failed_step_marked(
    stack: Stack, failed_build: FailedBuild, page: Page
) -> None:
    page.goto(dashboard_url(stack, f"/builds/{failed_build.build_id}"))
    sign_in(page, failed_build.username)
    expect(page.get_by_test_id("build-state")).to_have_text("failed")
    lines = wait_for_log_line(page, "error: the build broke")

    assert [line for line in lines if line.startswith("fetching")] == ["fetching 100%"]
    error_line = page.locator("[data-testid=log] .gb-line.gb-error", has_text="the build broke")
    expect(error_line).to_have_count(1)
    summary = page.get_by_test_id("error-summary")
    expect(summary).to_contain_text("error: the build broke")
    summary.get_by_test_id("error-line").filter(has_text="the build broke").click()
    expect(error_line).to_be_in_viewport()

    expect(page.locator("[data-step=install]")).to_have_attribute("data-step-state", "succeeded")
    failed = page.locator("[data-step=build]")
    expect(failed).to_have_attribute("data-step-state", "failed")
    expect(failed).to_contain_text("failed")

    page.get_by_test_id("log-search").fill("exited with code 3")
    page.get_by_test_id("log-search").press("Enter")
    expect(page.locator("[data-testid=log] .gb-match")).to_have_count(1)
    with page.expect_download() as download:
        page.get_by_test_id("log-download").click()
    full_log = Path(download.value.path()).read_bytes().decode()
    assert "error: the build broke\n" in full_log
    assert "fetching 10%\rfetching 55%\rfetching 100%\n" in full_log


def test_markup_in_a_commit_message_and_in_the_log_is_shown_as_text_and_runs_nothing(
    stack: Stack, failed_build: FailedBuild, page: Page
) -> None:
    page.goto(dashboard_url(stack, f"/builds/{failed_build.build_id}"))
    sign_in(page, failed_build.username)
    expect(page.get_by_test_id("commit-message")).to_have_text(XSS_MESSAGE)
    lines = wait_for_log_line(page, "<script>window.__xss = 1</script>")
    assert '<img src=x onerror="window.__xss = 2">' in lines

    for path in (f"/builds/{failed_build.build_id}", f"/builds?project={failed_build.project_id}"):
        page.goto(dashboard_url(stack, path))
        expect(page.get_by_test_id("commit-message")).to_have_text(XSS_MESSAGE)
        assert page.locator("img[src=x]").count() == 0
        assert page.evaluate("window.__xss") is None


def forged(token: str, build_id: str) -> str:
    """The share token with another build id in its claims (and the old signature)."""
    header, claims, signature = token.split(".")
    padded = claims + "=" * (-len(claims) % 4)
    data = json.loads(base64.urlsafe_b64decode(padded))
    data["bid"] = build_id
    encoded = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{header}.{encoded}.{signature}"


def test_a_share_link_shows_the_build_read_only_until_revoked_and_opens_nothing_else(
    stack: Stack,
    failed_build: FailedBuild,
    page: Page,
    new_context: Callable[[], BrowserContext],
) -> None:
    page.goto(dashboard_url(stack, f"/builds/{failed_build.build_id}"))
    sign_in(page, failed_build.username)
    page.get_by_test_id("share").click()
    page.get_by_test_id("create-share").click()
    share_field = page.get_by_test_id("share-url")
    expect(share_field).to_have_value(re.compile(r"/share/"))
    url = share_field.input_value()
    assert url.startswith(dashboard_url(stack, "/share/")), url

    stranger = new_context().new_page()
    stranger.goto(url)
    expect(stranger.get_by_test_id("shared-banner")).to_be_visible()
    expect(stranger.get_by_test_id("build-state")).to_have_text("failed")
    wait_for_log_line(stranger, "error: the build broke")
    for button in ("share", "redeploy", "rebuild", "cancel", "signed-in-user"):
        expect(stranger.get_by_test_id(button)).to_have_count(0)

    other = stack.http.get("/api/projects/counting/builds").json().get("builds", [])
    token = url.rsplit("/share/", 1)[1]
    for bad in (forged(token, other[0]["id"] if other else "b_000000000000"), token[:-4] + "AAAA"):
        stranger.goto(dashboard_url(stack, f"/share/{bad}"))
        expect(stranger.get_by_test_id("share-unavailable")).to_have_text("Share link not found")
        expect(stranger.get_by_test_id("log")).to_have_count(0)

    page.get_by_test_id("revoke-share").first.click()
    expect(page.get_by_test_id("share-link")).to_have_count(0)
    revoked = new_context().new_page()
    revoked.goto(url)
    expect(revoked.get_by_test_id("share-unavailable")).to_have_text("This link was revoked")
    expect(revoked.get_by_test_id("log")).to_have_count(0)


def page_of(sha: str) -> str:
    return f"<h1>commit {sha}</h1>\n"


def test_rollback_pins_production_a_new_push_leaves_it_unpin_restores_and_redeploy_rebuilds(
    stack: Stack, git_repo: GitRepo, page: Page
) -> None:
    project = stack.create_project("pinned", git_repo.bare, SECRET)
    add_user(stack, "dave", owner_of=(project["id"],))
    first_sha, first_build = push(stack, git_repo, {"gobuild.toml": PAGE_TOML, "a": "1"}, "one")
    assert stack.wait_for_build(first_build)["state"] == "succeeded"
    second_sha, second_build = push(stack, git_repo, {"a": "2"}, "two")
    assert stack.wait_for_build(second_build)["state"] == "succeeded"
    assert stack.get_site("pinned").text == page_of(second_sha)

    page.goto(dashboard_url(stack, f"/projects/{project['id']}"))
    sign_in(page, "dave")
    expect(page.get_by_test_id("following-badge")).to_be_visible()
    first = page.locator("[data-testid=deployment][data-number='1']")
    first.get_by_test_id("promote").click()
    page.get_by_test_id("confirm-promote").click()
    expect(page.get_by_test_id("pinned-badge")).to_be_visible()
    expect(page.get_by_test_id("pinned-note")).to_contain_text("Pinned")
    expect(first.get_by_test_id("is-production")).to_be_visible()
    assert stack.get_site("pinned").text == page_of(first_sha)

    # A new production push deploys at its own URL and leaves the pinned alias alone; the
    # page, without a reload, says the newest deployment is not served.
    page.evaluate("window.__not_reloaded = true")
    third_sha, third_build = push(stack, git_repo, {"a": "3"}, "three")
    third = stack.wait_for_build(third_build)
    assert third["state"] == "succeeded"
    assert stack.get_site("pinned").text == page_of(first_sha)
    expect(page.locator("[data-testid=deployment][data-number='3']")).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("pinned-note")).to_contain_text("#3, is not served")
    assert page.evaluate("window.__not_reloaded") is True

    page.get_by_test_id("unpin").click()
    expect(page.get_by_test_id("following-badge")).to_be_visible()
    assert stack.get_site("pinned").text == page_of(third_sha)

    first.get_by_test_id("redeploy").click()
    page.wait_for_url(re.compile(r"/builds/b_"))
    redeployed_id = page.url.rsplit("/", 1)[1]
    again = stack.wait_for_build(redeployed_id)
    assert (again["source"], again["commit_sha"], again["state"]) == (
        "redeploy",
        first_sha,
        "succeeded",
    )
    expect(page.get_by_test_id("build-state")).to_have_text("succeeded")
