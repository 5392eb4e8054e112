"""A project's scheduling settings on its page: auto-cancel, concurrency limit, required
builder labels, build time limit and the projects it depends on (owners change them, other
members see them)."""

from __future__ import annotations

from typing import Any

from nicegui import ui

from gobuild.ui.pages.frame import run_action
from gobuild.ui.user_session import UserSession


def parse_labels(text: str) -> list[str]:
    """`arch=amd64, node` -> ["arch=amd64", "node"] (the gateway checks each)."""
    return [label.strip() for label in text.split(",") if label.strip()]


def whole_number(value: float | None) -> int | None:
    """An optional number field as the API wants it: empty is null."""
    return None if value is None else int(value)


def dependency_options(project: dict[str, Any], readable: list[dict[str, Any]]) -> dict[str, str]:
    """The projects it may depend on (the user's others) and those it depends on already (a
    project the user cannot read shown by id)."""
    options = {p["id"]: p["name"] for p in readable if p["id"] != project["id"]}
    for dependency in project.get("dependencies") or []:
        options.setdefault(dependency["id"], dependency.get("name") or dependency["id"])
    return options


def scheduling_card(
    session: UserSession,
    project: dict[str, Any],
    readable: list[dict[str, Any]],
    editable: bool,
) -> None:
    shown = dict(project)
    with ui.card().classes("w-full gap-2").props("data-testid=scheduling"):
        ui.label("Scheduling").classes("text-lg font-bold")
        with ui.grid(columns=2).classes("w-full gap-x-6 gap-y-2"):
            auto_cancel = ui.switch(
                "A newer push cancels the branch's older builds",
                value=bool(project.get("auto_cancel", True)),
            ).props("data-testid=auto-cancel")
            limit = ui.number(
                "Concurrency limit (empty: none)",
                value=project.get("concurrency_limit"),
                min=1,
                precision=0,
            ).props("outlined dense data-testid=concurrency-limit")
            labels = ui.input(
                "Required builder labels (comma-separated)",
                value=", ".join(project.get("required_labels") or []),
            ).props("outlined dense data-testid=required-labels")
            timeout = ui.number(
                "Build time limit, seconds (empty: the instance's)",
                value=project.get("build_timeout_seconds"),
                min=1,
                precision=0,
            ).props("outlined dense data-testid=build-timeout")
        depends_on = (
            ui.select(
                dependency_options(project, readable),
                multiple=True,
                value=list(project.get("depends_on") or []),
                label="Depends on (a successful production build of one rebuilds this project)",
            )
            .classes("w-full")
            .props("outlined dense use-chips data-testid=depends-on")
        )
        fields = (auto_cancel, limit, labels, timeout, depends_on)

        async def save() -> None:
            body: dict[str, Any] = {
                "auto_cancel": bool(auto_cancel.value),
                "concurrency_limit": whole_number(limit.value),
                "required_labels": parse_labels(labels.value or ""),
                "build_timeout_seconds": whole_number(timeout.value),
            }
            # Sent only when changed: a dependency the user cannot read is kept as it is.
            if list(depends_on.value or []) != list(shown.get("depends_on") or []):
                body["depends_on"] = list(depends_on.value or [])
            saved = await run_action(
                lambda: session.patch(f"/api/projects/{project['id']}", body), "Scheduling saved"
            )
            if saved is not None:
                shown.update(saved)

        if editable:
            with ui.row().classes("w-full justify-end"):
                ui.button("Save", on_click=save).props(
                    "unelevated color=primary data-testid=save-scheduling"
                )
        else:
            for field in fields:
                field.disable()
            ui.label("Only the project's owners change these.").classes("text-grey-7 text-sm")
