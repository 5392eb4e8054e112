"""One attempt at one delivery: look up its receiver now (a hook deleted meanwhile gets
nothing), render the message and send it by webhook, commit status API or e-mail."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass

from gobuild.platform.auth.users import UserStore
from gobuild.platform.build_state import BuildState
from gobuild.platform.notification_records import Delivery
from gobuild.platform.notifications.forge_status import (
    describe,
    repository_path,
    status_request,
)
from gobuild.platform.notifications.mailer import SmtpMailer
from gobuild.platform.notifications.messages import BuildLinks, email_message, hook_payload
from gobuild.platform.notifications.outcome import Outcome, give_up
from gobuild.platform.notifications.outgoing import OutgoingHttp
from gobuild.platform.records import Project
from gobuild.platform.repo_credentials import SecretCipher, UnreadableSecret
from gobuild.platform.stores.build_notes import BuildNotes
from gobuild.platform.stores.hooks import HookStore
from gobuild.platform.stores.projects import ProjectStore

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-GoBuild-Signature-256"
USER_AGENT = "GoBuild-Notifications"


def sign_body(secret: str, body: bytes) -> str:
    """`sha256=<hex>`: the HMAC-SHA256 of the raw body, as GitHub signs its webhooks."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ForgeUrls:
    """The instance's forge API base URLs (GOBUILD_GITHUB_API_URL, GOBUILD_GITLAB_URL)."""

    github_api_url: str
    gitlab_url: str


class DeliverySender:
    """Renders and sends deliveries of every kind."""

    def __init__(
        self,
        *,
        projects: ProjectStore,
        hooks: HookStore,
        users: UserStore,
        notes: BuildNotes,
        cipher: SecretCipher,
        http: OutgoingHttp,
        mailer: SmtpMailer | None,
        links: BuildLinks,
        forge_urls: ForgeUrls,
    ) -> None:
        self.projects = projects
        self.hooks = hooks
        self.users = users
        self.notes = notes
        self.cipher = cipher
        self.http = http
        self.mailer = mailer
        self.links = links
        self.forge_urls = forge_urls

    async def send(self, delivery: Delivery) -> Outcome:
        project = await self.projects.get(delivery.project_id)
        if project is None:
            return give_up("the project no longer exists")
        delivery = await self._completed(delivery)
        try:
            if delivery.kind == "hook":
                return await self._send_hook(delivery, project)
            if delivery.kind == "email":
                return await self._send_email(delivery, project)
            return await self._send_commit_status(delivery, project)
        except UnreadableSecret as exc:
            return give_up(str(exc))

    async def _completed(self, delivery: Delivery) -> Delivery:
        """The builds with the step and number their notes learnt since (events of one build
        on different topics may be handled in another order than they were published)."""
        builds = []
        for build in delivery.builds:
            if build.step is None or build.number is None:
                notes = await self.notes.get(build.build_id)
                known_number = int(notes["number"]) if notes.get("number") else None
                build = build.model_copy(
                    update={
                        "step": build.step or notes.get("step"),
                        "number": known_number if build.number is None else build.number,
                    }
                )
            builds.append(build)
        return delivery.model_copy(update={"builds": builds})

    async def _excerpts(self, delivery: Delivery) -> dict[str, list[str]]:
        """The error lines of each build, for failure messages (read now: log lines arrive on
        their own topic and may be later than the completion)."""
        if delivery.stage != "failed":
            return {}
        return {b.build_id: await self.notes.error_lines(b.build_id) for b in delivery.builds}

    async def _send_hook(self, delivery: Delivery, project: Project) -> Outcome:
        hook = await self.hooks.get(project.id, delivery.receiver)
        if hook is None:
            return give_up("the hook was deleted")
        payload = hook_payload(delivery, project, self.links, await self._excerpts(delivery))
        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-GoBuild-Event": delivery.stage,
            "X-GoBuild-Delivery": delivery.id,
            SIGNATURE_HEADER: sign_body(self.cipher.decrypt(hook.secret), body),
        }
        return await self.http.post(hook.url, content=body, headers=headers, checked=True)

    async def _send_email(self, delivery: Delivery, project: Project) -> Outcome:
        if self.mailer is None:
            return give_up("e-mail is not configured (GOBUILD_SMTP_HOST)")
        user = await self.users.get(delivery.receiver)
        if user is None or not user.email or not user.email_verified:
            return give_up("the user has no verified e-mail address")
        message = email_message(
            delivery,
            project,
            self.links,
            await self._excerpts(delivery),
            sender=self.mailer.sender,
            recipient=user.email,
        )
        return await self.mailer.send(message)

    async def _send_commit_status(self, delivery: Delivery, project: Project) -> Outcome:
        build = delivery.builds[0]
        repo_path = repository_path(project.repo_url)
        if project.forge_token is None or build.commit_sha is None or repo_path is None:
            return give_up("the project has no forge token, repository path or commit")
        forge = "github" if delivery.kind == "github" else "gitlab"
        default_url = (
            self.forge_urls.github_api_url if forge == "github" else self.forge_urls.gitlab_url
        )
        request = status_request(
            forge,
            project.forge_url or default_url,
            repo_path,
            build.commit_sha,
            self.cipher.decrypt(project.forge_token),
            delivery.stage,
            target_url=self.links.build_page(build.build_id),
            description=describe(
                BuildState(build.state),
                number=build.number,
                step=build.step,
                deployment_url=build.deployment_url,
            ),
        )
        headers = {**request.headers, "Content-Type": "application/json", "User-Agent": USER_AGENT}
        return await self.http.post(
            request.url,
            content=json.dumps(request.body).encode(),
            headers=headers,
            # The instance's own forge URLs are the operator's; a project's is a user's.
            checked=project.forge_url is not None,
        )
