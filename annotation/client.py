"""Thin typed wrapper over the Label Studio SDK (``label_studio_sdk`` 2.x) for alignloop.

Connection settings use the SDK's own environment variable names: ``LABEL_STUDIO_URL`` and
``LABEL_STUDIO_API_KEY`` (a legacy ``Token`` key, or a personal-access JWT). Errors name the URL,
never the key.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from alignloop.warehouse.redact import redact_url, scrub, url_secrets

logger = logging.getLogger(__name__)

URL_ENV = "LABEL_STUDIO_URL"
API_KEY_ENV = "LABEL_STUDIO_API_KEY"
T = TypeVar("T")
_RETRY_STATUS = (429, 502, 503, 504)

# Webhook actions that matter for feedback collection (see label_studio_sdk.types.ActionsEnum).
ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")


class LabelStudioClientError(RuntimeError):
    """A one-line, token-free description of what went wrong talking to Label Studio."""


@dataclasses.dataclass(frozen=True)
class Project:
    id: int
    title: str
    label_config: str
    overlap: int = 1
    """Annotations a task wants before it counts as done (Label Studio's ``maximum_annotations``)."""
    instructions: str = ""
    """What annotators read before they label (``expert_instruction``)."""


@dataclasses.dataclass(frozen=True)
class Task:
    id: int
    data: dict[str, Any]
    total_annotations: int = 0


@dataclasses.dataclass(frozen=True)
class Annotator:
    id: int
    email: str | None = None


@dataclasses.dataclass(frozen=True)
class User:
    id: int
    email: str
    token: str | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True)
class ExportedAnnotation:
    task_id: int
    annotation_id: int
    annotator: Annotator
    result: list[dict[str, Any]]
    updated_at: str | None
    was_cancelled: bool
    task_data: dict[str, Any]
    lead_time: float | None = None
    """Seconds the annotator spent on the annotation, as Label Studio measured it (None: not reported)."""


class LabelStudioClient:
    """Create with :func:`connect`. ``sdk`` exposes the underlying ``LabelStudio`` client."""

    def __init__(self, url: str, api_key: str, *, retries: int = 4, backoff: float = 0.5, timeout: float = 60.0):
        self.url = url.rstrip("/")  # as given: credentials in it reach the server
        self.shown_url = redact_url(self.url)  # in messages
        self._secrets = (api_key, *url_secrets(self.url))
        self._api_key = api_key
        self._retries = retries
        self._backoff = backoff
        # the SDK's own retries are off: _call retries, so attempts do not multiply
        self.sdk = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout, max_retries=0)

    def __repr__(self) -> str:  # never show the key
        return f"LabelStudioClient(url={self.shown_url!r})"

    # ---------------------------------------------------------------------------------------- plumbing

    def _call(self, what: str, fn: Callable[[], T], *, idempotent: bool = True) -> T:
        """Run ``fn``; retry with exponential backoff; turn errors into one token-free line.

        Connection failures before the request was sent are always retried; dropped connections and
        429/502/503/504 answers only for idempotent calls (a retried import would duplicate tasks)."""
        delay = self._backoff
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                return fn()
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if last:
                    raise LabelStudioClientError(
                        f"cannot reach Label Studio at {self.shown_url} ({what}): {type(exc).__name__} after "
                        f"{self._retries + 1} attempts"
                    ) from None
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout) as exc:
                if last or not idempotent:
                    raise LabelStudioClientError(
                        f"Label Studio at {self.shown_url} dropped the connection ({what}): {type(exc).__name__}"
                    ) from None
            except ApiError as exc:
                if idempotent and not last and exc.status_code in _RETRY_STATUS:
                    time.sleep(delay)
                    delay *= 2
                    continue
                body = exc.body if isinstance(exc.body, str) else json.dumps(exc.body, default=str)
                body = scrub(body, *self._secrets)[:300].replace("\n", " ")
                hint = " (check LABEL_STUDIO_API_KEY)" if exc.status_code in (401, 403) else ""
                raise LabelStudioClientError(
                    f"Label Studio at {self.shown_url} refused {what}: HTTP {exc.status_code}{hint}: {body}"
                ) from None
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _http(self) -> httpx.Client:
        return self.sdk._client_wrapper.httpx_client.httpx_client  # the SDK's own httpx.Client

    def _headers(self) -> dict[str, str]:
        return self.sdk._client_wrapper.get_headers()

    # ---------------------------------------------------------------------------------------- projects

    def list_projects(self) -> list[Project]:
        def run() -> list[Project]:
            return [Project(p.id, p.title or "", p.label_config or "", int(getattr(p, "maximum_annotations", 1) or 1),
                            getattr(p, "expert_instruction", "") or "")
                    for p in self.sdk.projects.list(page_size=100)]

        return self._call("listing projects", run)

    def get_or_create_project(self, title: str, config: str | Callable[[Project | None], str],
                              description: str = "") -> Project:
        """Project with this exact title (the oldest one if several), created if missing.
        An existing project's label config is updated when it differs. ``config`` may be a function of the existing
        project (None when there is none) that returns the config it should have."""
        if len(title) < 3:
            raise ValueError("Label Studio project titles need at least 3 characters")
        want = config if callable(config) else (lambda _: config)
        for project in sorted(self.list_projects(), key=lambda p: p.id):
            if project.title == title:
                xml = want(project)
                if _normalise_xml(project.label_config) != _normalise_xml(xml):
                    self._call(
                        f"updating project {project.id} config",
                        lambda pid=project.id, xml=xml: self.sdk.projects.update(id=pid, label_config=xml),
                    )
                    return dataclasses.replace(project, label_config=xml)
                return project
        xml = want(None)
        created = self._call(
            f"creating project {title!r}",
            lambda: self.sdk.projects.create(title=title, label_config=xml, description=description),
            idempotent=False,
        )
        return Project(created.id, created.title or title, created.label_config or xml)

    def project(self, project_id: int) -> Project:
        """One project by id."""
        found = [p for p in self.list_projects() if p.id == project_id]
        if not found:
            raise LabelStudioClientError(f"Label Studio at {self.shown_url} has no project {project_id}")
        return found[0]

    def configure_project(self, project: Project, overlap: int | None = None, instructions: str | None = None
                          ) -> Project:
        """Set how many annotations each task wants and what annotators read first, where they differ."""
        change: dict[str, Any] = {}
        if overlap is not None and overlap != project.overlap:
            change["maximum_annotations"] = overlap
        if instructions is not None and instructions != project.instructions:
            change |= {"expert_instruction": instructions, "show_instruction": bool(instructions)}
        if not change:
            return project
        self._call(f"updating project {project.id} settings", lambda: self.sdk.projects.update(id=project.id, **change))
        return dataclasses.replace(project, overlap=change.get("maximum_annotations", project.overlap),
                                   instructions=change.get("expert_instruction", project.instructions))

    def delete_project(self, project_id: int) -> None:
        self._call(f"deleting project {project_id}", lambda: self.sdk.projects.delete(id=project_id))

    # ---------------------------------------------------------------------------------------- tasks

    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> list[int]:
        """Import task data dicts in ONE bulk request; return the new task ids in input order.

        Each item is either plain task data (``{"prompt": ..., "a": ..., "b": ...}``) or a full task
        ``{"data": {...}, "meta": {...}}``. Label Studio Community imports synchronously and, with
        ``return_task_ids=true``, answers ``task_ids`` in creation (= input) order.
        """
        if not tasks:
            return []
        payload = [
            t if set(t) <= {"data", "meta", "annotations", "predictions"} and "data" in t else {"data": t}
            for t in tasks
        ]

        def run() -> list[int]:
            # raw POST: the SDK's typed request model would coerce the payload, and its response model only
            # carries task_ids as an undeclared extra field.
            response = self._http().post(
                f"{self.url}/api/projects/{project_id}/import",
                params={"return_task_ids": "true"},
                json=payload,
                headers=self._headers(),
                timeout=300,
            )
            if response.status_code >= 400:
                raise ApiError(status_code=response.status_code, body=response.text)
            return list(response.json().get("task_ids") or [])

        ids = self._call(f"importing {len(payload)} tasks into project {project_id}", run, idempotent=False)
        if len(ids) != len(payload):
            raise LabelStudioClientError(
                f"Label Studio at {self.shown_url} returned {len(ids)} task ids for {len(payload)} imported tasks "
                "(async import edition?)"
            )
        return [int(i) for i in ids]

    def list_tasks(self, project_id: int) -> list[Task]:
        def run() -> list[Task]:
            return [
                Task(int(t.id), dict(t.data or {}), int(getattr(t, "total_annotations", 0) or 0))
                for t in self.sdk.tasks.list(project=project_id, page_size=500)
            ]

        return self._call(f"listing tasks of project {project_id}", run)

    # ---------------------------------------------------------------------------------------- annotations

    def create_annotation(
        self,
        task_id: int,
        result: list[dict[str, Any]],
        *,
        completed_by: int | None = None,
        was_cancelled: bool = False,
        lead_time: float | None = None,
    ) -> int:
        """Create an annotation as the connected user (or, for an admin, on behalf of ``completed_by``)."""
        kwargs: dict[str, Any] = {"result": result, "was_cancelled": was_cancelled}
        if completed_by is not None:
            kwargs["completed_by"] = completed_by
        if lead_time is not None:
            kwargs["lead_time"] = lead_time
        created = self._call(
            f"creating an annotation on task {task_id}",
            lambda: self.sdk.annotations.create(id=task_id, **kwargs),
            idempotent=False,
        )
        return int(created.id)

    def export_annotations(self, project_id: int, *, include_cancelled: bool = True) -> list[ExportedAnnotation]:
        """All annotations of a project (one record per annotation), via the JSON export endpoint."""

        def run() -> list[dict[str, Any]]:
            response = self._http().get(
                f"{self.url}/api/projects/{project_id}/export",
                params={"exportType": "JSON"},
                headers=self._headers(),
                timeout=300,
            )
            if response.status_code >= 400:
                raise ApiError(status_code=response.status_code, body=response.text)
            return response.json()

        exported = self._call(f"exporting project {project_id}", run)
        emails = self._user_emails() if any(task.get("annotations") for task in exported) else {}
        records: list[ExportedAnnotation] = []
        for task in exported:
            for ann in task.get("annotations") or []:
                cancelled = bool(ann.get("was_cancelled"))
                if cancelled and not include_cancelled:
                    continue
                records.append(
                    ExportedAnnotation(
                        task_id=int(task["id"]),
                        annotation_id=int(ann["id"]),
                        annotator=_annotator(ann.get("completed_by"), emails),
                        result=list(ann.get("result") or []),
                        updated_at=ann.get("updated_at"),
                        was_cancelled=cancelled,
                        task_data=dict(task.get("data") or {}),
                        lead_time=_seconds(ann.get("lead_time")),
                    )
                )
        records.sort(key=lambda r: (r.task_id, r.annotation_id))
        return records

    # ---------------------------------------------------------------------------------------- users

    def current_user(self) -> User:
        me = self._call("reading the current user", lambda: self.sdk.users.whoami())
        return User(int(me.id), me.email or "")

    def _user_emails(self) -> dict[int, str]:
        """id -> email of the organisation's members; empty when the key may not list users."""
        try:
            return {user.id: user.email for user in self.list_users()}
        except LabelStudioClientError:
            return {}

    def list_users(self) -> list[User]:
        users = self._call("listing users", lambda: self.sdk.users.list())
        return [User(int(u.id), u.email or "") for u in users]

    def create_user(
        self, email: str, password: str | None = None, *, first_name: str = "", last_name: str = ""
    ) -> User:
        """Add a member to the organisation.

        Without ``password``: ``POST /api/users`` (admin only). The user cannot log in and has no usable
        token, but an admin can attribute annotations to it with ``create_annotation(completed_by=id)``.

        With ``password``: sign the user up through the organisation's invite link (the only way to get a
        password into Label Studio Community over HTTP; public sign-up stays disabled), then read the
        user's own legacy API token from ``/api/current-user/token``. ``User.token`` can be passed to
        :func:`connect` to act as that annotator.
        """
        if password is None:
            created = self._call(
                f"creating user {email}",
                lambda: self.sdk.users.create(username=email, email=email, first_name=first_name, last_name=last_name),
                idempotent=False,
            )
            return User(int(created.id), created.email or email)
        invite = self._call(
            "reading the organisation invite link", lambda: self.sdk.organizations.invites.get_invite_link()
        )
        return self._signup_with_invite(email, password, invite.token or "")

    def _signup_with_invite(self, email: str, password: str, invite_token: str) -> User:
        def run() -> User:
            with httpx.Client(base_url=self.url, timeout=30, follow_redirects=False, trust_env=False) as web:
                signup = web.get("/user/signup/", params={"token": invite_token})
                csrf = web.cookies.get("csrftoken")
                if signup.status_code != 200 or not csrf:
                    raise ApiError(status_code=signup.status_code, body="sign-up page unavailable")
                posted = web.post(
                    "/user/signup/",
                    params={"token": invite_token},
                    data={"email": email, "password": password, "csrfmiddlewaretoken": csrf},
                    headers={"Referer": f"{self.url}/user/signup/", "X-CSRFToken": csrf},
                )
                if posted.status_code not in (301, 302, 303):
                    errors = re.findall(r'class="[^"]*error[^"]*"[^>]*>\s*([^<]+)', posted.text)
                    raise ApiError(
                        status_code=posted.status_code,
                        body="sign-up rejected: " + ("; ".join(e.strip() for e in errors) or "unknown"),
                    )
                token = web.get("/api/current-user/token")
                me = web.get("/api/current-user/whoami")
                if token.status_code != 200 or me.status_code != 200:
                    raise ApiError(status_code=token.status_code, body="could not read the new user's token")
                return User(int(me.json()["id"]), me.json().get("email") or email, token.json()["token"])

        return self._call(f"signing up user {email}", run, idempotent=False)

    # ---------------------------------------------------------------------------------------- webhooks

    def add_webhook(
        self,
        project_id: int,
        url: str,
        headers: dict[str, str] | None = None,
        actions: Iterable[str] = ANNOTATION_ACTIONS,
        send_payload: bool = True,
    ) -> int:
        """Register a project webhook (idempotent by project + url); returns its id.

        Local receivers need the server started with SSRF protection off (annotation.server does that)."""
        existing = self._call("listing webhooks", lambda: self.sdk.webhooks.list(project=str(project_id)))
        for hook in existing:
            if hook.url == url and getattr(hook, "project", None) == project_id:
                return int(hook.id)
        created = self._call(
            f"adding a webhook to project {project_id}",
            lambda: self.sdk.webhooks.create(
                url=url,
                project=project_id,
                headers=headers or {},
                actions=list(actions),
                send_for_all_actions=False,
                send_payload=send_payload,
                is_active=True,
            ),
            idempotent=False,
        )
        return int(created.id)


def _annotator(completed_by: Any, emails: dict[int, str]) -> Annotator:
    """The JSON export gives ``completed_by`` as a user id (older servers: a dict with id and email)."""
    if isinstance(completed_by, dict):
        user_id = int(completed_by.get("id"))
        return Annotator(user_id, completed_by.get("email") or emails.get(user_id))
    if completed_by is None:
        return Annotator(-1)
    return Annotator(int(completed_by), emails.get(int(completed_by)))


def _seconds(value: Any) -> float | None:
    """A duration in seconds from the export, or None when it is absent, not a number or negative."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _normalise_xml(xml: str) -> str:
    return re.sub(r">\s+<", "><", xml.strip())


def connect(
    url: str | None = None, api_key: str | None = None, *, check: bool = True, retries: int = 4, backoff: float = 0.5
) -> LabelStudioClient:
    """Client for ``url`` / ``api_key`` (default: env LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY).

    With ``check`` (default) the server is contacted once (retrying connection errors with backoff) and
    the key verified, so a wrong URL or key fails here with a one-line error."""
    url = url or os.environ.get(URL_ENV)
    api_key = api_key or os.environ.get(API_KEY_ENV)
    missing = [name for name, value in ((URL_ENV, url), (API_KEY_ENV, api_key)) if not value]
    if missing:
        raise LabelStudioClientError(
            f"Label Studio connection not configured: set {' and '.join(missing)} (or pass url=/api_key=)"
        )
    client = LabelStudioClient(url, api_key, retries=retries, backoff=backoff)
    if check:
        client.current_user()
    return client
