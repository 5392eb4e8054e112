"""What a notification says: the outgoing webhook's JSON body (a Slack-compatible `text` and
the structured fields) and the e-mail's plain text and HTML parts.

Everything a user controls (branch, commit message, step, error, log lines) is escaped for
where it goes: Slack's `&`, `<`, `>` in `text`, HTML in the e-mail's HTML part.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from gobuild.platform.notification_records import BuildSummary, Delivery
from gobuild.platform.records import Project

Escape = Callable[[str], str]

_VERBS = {
    "started": "started",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "was cancelled",
    "deployed": "is deployed",
    "promoted": "is live in production",
}
_PLURAL_VERBS = {
    **_VERBS,
    "cancelled": "were cancelled",
    "deployed": "are deployed",
    "promoted": "went live in production",
}


@dataclass(frozen=True)
class BuildLinks:
    """Links to a build's page: the dashboard's, or the gateway's API when there is none."""

    builds_base: str

    @classmethod
    def for_urls(cls, dashboard_url: str, gateway_public_url: str) -> BuildLinks:
        if dashboard_url:
            return cls(f"{dashboard_url.rstrip('/')}/builds")
        return cls(f"{gateway_public_url.rstrip('/')}/api/builds")

    def build_page(self, build_id: str) -> str:
        return f"{self.builds_base}/{build_id}"


def slack_escape(text: str) -> str:
    """Slack's control characters in message text (api.slack.com: formatting basics)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str) -> str:
    return text


def headline(delivery: Delivery, project: Project) -> str:
    """`site: build #12 failed`, or for several builds `site: 3 builds failed`."""
    if len(delivery.builds) > 1:
        return f"{project.name}: {len(delivery.builds)} builds {_PLURAL_VERBS[delivery.stage]}"
    return f"{project.name}: {_build_name(delivery.builds[0])} {_VERBS[delivery.stage]}"


def _build_name(build: BuildSummary) -> str:
    return f"build #{build.number}" if build.number is not None else f"build {build.build_id}"


def describe_build(stage: str, build: BuildSummary, escape: Escape) -> str:
    """One build's line: `build #12 (main @ abc1234) failed at step build: exit code 1`."""
    where = [escape(build.branch)] if build.branch else []
    if build.commit_sha:
        where.append(escape(build.commit_sha[:7]))
    text = _build_name(build) + (f" ({' @ '.join(where)})" if where else "")
    verb = "timed out" if build.state == "timed_out" else _VERBS[stage]
    text += f" {verb}"
    if stage == "failed" and build.step:
        text += f" at step {escape(build.step)}"
    if stage in ("failed", "cancelled") and build.error:
        text += f": {escape(build.error)}"
    if stage in ("succeeded", "deployed", "promoted") and build.deployment_url:
        text += f": {escape(build.deployment_url)}"
    return text


def _text(
    delivery: Delivery,
    project: Project,
    links: BuildLinks,
    excerpts: Mapping[str, list[str]],
    escape: Escape,
) -> str:
    lines = [escape(headline(delivery, project))]
    for build in delivery.builds:
        lines.append(
            f"{describe_build(delivery.stage, build, escape)} {links.build_page(build.build_id)}"
        )
        excerpt = excerpts.get(build.build_id)
        if excerpt:
            lines.append("```\n" + "\n".join(escape(line) for line in excerpt) + "\n```")
    return "\n".join(lines)


def hook_payload(
    delivery: Delivery,
    project: Project,
    links: BuildLinks,
    excerpts: Mapping[str, list[str]],
) -> dict[str, Any]:
    """The webhook's JSON body: `text` for Slack (and Mattermost, Discord's /slack, ...) and
    the same facts as fields."""
    return {
        "text": _text(delivery, project, links, excerpts, slack_escape),
        "event": delivery.stage,
        "delivery_id": delivery.id,
        "project": {"id": project.id, "name": project.name},
        "builds": [
            {
                **build.model_dump(mode="json"),
                "url": links.build_page(build.build_id),
                "error_lines": excerpts.get(build.build_id, []),
            }
            for build in delivery.builds
        ],
    }


def email_message(
    delivery: Delivery,
    project: Project,
    links: BuildLinks,
    excerpts: Mapping[str, list[str]],
    *,
    sender: str,
    recipient: str,
) -> EmailMessage:
    """The e-mail: plain text and an HTML alternative, everything user-controlled escaped."""
    message = EmailMessage()
    message["Subject"] = f"[GoBuild] {headline(delivery, project)}"
    message["From"] = sender
    message["To"] = recipient
    message["Message-ID"] = make_msgid(domain="gobuild")
    message.set_content(_text(delivery, project, links, excerpts, _plain) + "\n")
    message.add_alternative(_html(delivery, project, links, excerpts), subtype="html")
    return message


def _html(
    delivery: Delivery,
    project: Project,
    links: BuildLinks,
    excerpts: Mapping[str, list[str]],
) -> str:
    escape = html.escape
    parts = [f"<h2>{escape(headline(delivery, project))}</h2>"]
    for build in delivery.builds:
        url = escape(links.build_page(build.build_id), quote=True)
        line = describe_build(delivery.stage, build, escape)
        parts.append(f'<p>{line} <a href="{url}">Open the build</a></p>')
        excerpt = excerpts.get(build.build_id)
        if excerpt:
            parts.append("<pre>" + "\n".join(escape(line) for line in excerpt) + "</pre>")
    return "<!doctype html>\n<html><body>\n" + "\n".join(parts) + "\n</body></html>\n"
