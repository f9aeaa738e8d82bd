"""A real Label Studio as the annotation backend, over its REST API.

The calls are those of label-studio-sdk 2.x (``projects.create``, ``projects.import_tasks``,
``tasks.list`` with a data-manager query, ``annotations.create``), made with ``requests``:
the SDK itself pins ``opencv-python-headless`` 4.12, which caps NumPy below 2.3, and this
project runs NumPy 2.4 (Label Studio runs in a venv of its own, see ``./run``).

- A project per service, titled :attr:`ProjectSpec.title`; its label config is a single-choice
  ``Choices`` named ``label`` over the service's classes, on an ``Image`` (``$image``), a
  ``Text`` (``$text``) or the input's numbers as text (``$values``). When the service learns a
  class, the choice is added (existing annotations stay valid).
- Tasks carry ``data.request_id`` (the served request) and the champion's answer as a
  prediction (``model_version`` ``v<N>``, ``score``): annotators start from it.
- Completed tasks are read with the data manager's filter ``completed_at > cursor``, ordered
  by ``completed_at``. After a full page the cursor is the last ``completed_at`` read (the
  next page follows); once caught up it is moved back by :data:`OVERLAP_S` seconds (a task
  whose annotation commits late, with an earlier time, is read on the next call), so a task
  can be returned twice: callers count each task once.
- Tasks are found by request id with a filter ``data.request_id = ...`` (OR-ed, in chunks).

Errors: a connection failure, a timeout or a 5xx is :class:`AnnotatorUnavailable` (retry
later); a 4xx is :class:`AnnotatorError` with Label Studio's own message.

The contract test ``tests/test_annotation_backends.py`` runs it against a real Label Studio;
:func:`label_config` shows a project's label config.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from xml.sax.saxutils import quoteattr

import requests

from cl_server.annotation.backend import (AnnotatorError, AnnotatorUnavailable, CompletedTask,
                                          OpenTask, ProjectSpec, TaskIn)

OVERLAP_S = 2.0
FIND_CHUNK = 50
"""Request ids per ``find_tasks`` query (each is one filter item in the query string)."""
PAGE = 100
CONTROL = "label"
EPOCH = "1970-01-01T00:00:00.000000Z"


def label_config(spec: ProjectSpec) -> str:
    """The Label Studio label config of ``spec``.

    >>> print(label_config(ProjectSpec("s", "s", ("cat", "a&b"), kind="text")))
    <View><Text name="text" value="$text"/><Choices name="label" toName="text" choice="single" showInline="true"><Choice value="cat"/><Choice value="a&amp;b"/></Choices></View>
    """
    source = {"image": '<Image name="image" value="$image" zoom="true"/>',
              "text": '<Text name="text" value="$text"/>',
              "values": '<Text name="values" value="$values"/>'}[spec.kind]
    choices = "".join(f"<Choice value={quoteattr(c)}/>" for c in spec.classes)
    return (f'<View>{source}<Choices name="{CONTROL}" toName="{spec.kind}" choice="single" '
            f'showInline="true">{choices}</Choices></View>')


def _choice(result: Sequence[dict[str, Any]]) -> str | None:
    for item in result or ():
        if item.get("type") == "choices" and item.get("from_name") == CONTROL:
            chosen = (item.get("value") or {}).get("choices") or []
            return str(chosen[0]) if chosen else None
    return None


def _stamp(value: str, back_s: float = 0.0) -> str:
    """``value`` (ISO 8601) in UTC with microseconds, ``back_s`` seconds earlier: one format,
    so that cursors compare as strings.

    >>> _stamp("2026-12-06T18:27:10Z", 0.5)
    '2026-12-06T18:27:09.500000Z'
    """
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    moment = moment.astimezone(timezone.utc) - timedelta(seconds=back_s)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LabelStudioBackend:
    """See the module doc. ``url``: Label Studio's base URL; ``token``: an API token (the
    legacy token of a user, sent as ``Authorization: Token ...``); ``timeout_s``: per request.
    """

    name = "label_studio"

    def __init__(self, url: str, token: str, *, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self._kinds: dict[str, str] = {}

    # -- HTTP ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            answer = self.session.request(method, f"{self.url}{path}",
                                          timeout=(3.0, self.timeout_s), **kwargs)
        except requests.RequestException as exc:
            raise AnnotatorUnavailable(f"Label Studio at {self.url} is unreachable: "
                                       f"{type(exc).__name__}: {exc}") from None
        if answer.status_code >= 500:
            raise AnnotatorUnavailable(f"Label Studio answered {answer.status_code} to "
                                       f"{method} {path}: {answer.text[:300]}")
        if answer.status_code >= 400:
            raise AnnotatorError(f"Label Studio refused {method} {path} "
                                 f"({answer.status_code}): {answer.text[:300]}")
        return answer.json() if answer.content else None

    def _tasks(self, project: str, query: dict[str, Any], page_size: int,
               fields: str = "all") -> list[dict[str, Any]]:
        body = self._call("GET", "/api/tasks", params={
            "project": project, "fields": fields, "page": 1, "page_size": page_size,
            "query": json.dumps(query)})
        return list(body.get("tasks", [])) if isinstance(body, dict) else list(body or [])

    # -- the interface ---------------------------------------------------------------------

    def ensure_project(self, spec: ProjectSpec) -> str:
        project = self._find_project(spec.title)
        config = label_config(spec)
        if project is None:
            project = self._call("POST", "/api/projects", json={
                "title": spec.title, "description": spec.description, "label_config": config,
                "show_skip_button": True, "maximum_annotations": 1})
        else:
            have = self._choices(project)
            if not set(spec.classes) <= set(have):
                merged = list(have) + [c for c in spec.classes if c not in have]
                config = label_config(ProjectSpec(spec.service, spec.title, tuple(merged),
                                                  spec.kind))
                self._call("PATCH", f"/api/projects/{project['id']}",
                           json={"label_config": config})
        self._kinds[str(project["id"])] = spec.kind
        return str(project["id"])

    def _find_project(self, title: str) -> dict[str, Any] | None:
        page = 1
        while True:
            body = self._call("GET", "/api/projects", params={"page": page, "page_size": PAGE,
                                                              "title": title})
            results = body.get("results", []) if isinstance(body, dict) else body
            for project in results:
                if project.get("title") == title:
                    return dict(project)
            if not isinstance(body, dict) or not body.get("next"):
                return None
            page += 1

    def _choices(self, project: dict[str, Any]) -> list[str]:
        parsed = (project.get("parsed_label_config") or {}).get(CONTROL) or {}
        return [str(label) for label in parsed.get("labels", [])]

    def import_tasks(self, project: str, tasks: Sequence[TaskIn]) -> dict[str, str]:
        if not tasks:
            return {}
        kind = self._kinds.get(project) or "image"
        payload = []
        for task in tasks:
            item: dict[str, Any] = {"data": {**task.data, "request_id": task.request_id,
                                             "served_ms": task.served_ms}}
            if task.prediction is not None:
                item["predictions"] = [{
                    "model_version": f"v{task.model_version}" if task.model_version else "",
                    "score": task.score if task.score is not None else 0.0,
                    "result": [{"from_name": CONTROL, "to_name": kind, "type": "choices",
                                "value": {"choices": [task.prediction]}}]}]
            payload.append(item)
        body = self._call("POST", f"/api/projects/{project}/import",
                          params={"return_task_ids": "true"}, json=payload)
        ids = (body or {}).get("task_ids") or []
        if len(ids) != len(tasks):  # an older server: look them up
            return self.find_tasks(project, [t.request_id for t in tasks])
        return {task.request_id: str(i) for task, i in zip(tasks, ids, strict=True)}

    def find_tasks(self, project: str, request_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(request_ids), FIND_CHUNK):
            chunk = list(request_ids[start:start + FIND_CHUNK])
            query = {"filters": {"conjunction": "or", "items": [
                {"filter": "filter:tasks:data.request_id", "operator": "equal",
                 "type": "String", "value": rid} for rid in chunk]}}
            for task in self._tasks(project, query, page_size=len(chunk) * 4,
                                    fields="task_only"):
                rid = str((task.get("data") or {}).get("request_id"))
                if rid in chunk:
                    found.setdefault(rid, str(task["id"]))
        return found

    def completed(self, project: str, after: str | None, limit: int = 500
                  ) -> tuple[list[CompletedTask], str | None]:
        query = {"filters": {"conjunction": "and", "items": [
            {"filter": "filter:tasks:completed_at", "operator": "greater", "type": "Datetime",
             "value": after or EPOCH}]}, "ordering": ["tasks:completed_at"]}
        done: list[CompletedTask] = []
        last: str | None = None
        for task in self._tasks(project, query, page_size=limit):
            if not task.get("completed_at"):
                continue
            stamp = _stamp(task["completed_at"])
            last = stamp if last is None or stamp > last else last
            annotations = sorted(task.get("annotations") or [], key=lambda a: a["id"])
            kept = [a for a in annotations if not a.get("was_cancelled")]
            first = kept[0] if kept else (annotations[0] if annotations else None)
            if first is None:
                continue
            label = None if first.get("was_cancelled") else _choice(first.get("result"))
            done.append(CompletedTask(
                task_id=str(task["id"]), request_id=str((task.get("data") or {}).get(
                    "request_id")), label=label, annotation_id=str(first["id"]),
                completed_at=stamp, annotator=str(first.get("completed_by") or "") or None))
        if last is None:
            return done, after
        if len(done) >= limit:  # more to read: go on right after this page
            return done, last
        cursor = _stamp(last, OVERLAP_S)  # caught up: look back a little next time
        return done, max(cursor, after) if after is not None else cursor

    def open_tasks(self, project: str, limit: int = 100) -> list[OpenTask]:
        query = {"filters": {"conjunction": "and", "items": [
            {"filter": "filter:tasks:total_annotations", "operator": "equal",
             "type": "Number", "value": 0}]}, "ordering": ["tasks:id"]}
        opened = []
        for task in self._tasks(project, query, page_size=limit):
            predictions = task.get("predictions") or []
            guess = _choice(predictions[0].get("result")) if predictions else None
            data = dict(task.get("data") or {})
            opened.append(OpenTask(str(task["id"]), str(data.get("request_id")), guess, data))
        return opened

    def annotate(self, project: str, task_id: str, label: str,
                 lead_time_s: float | None = None) -> str:
        kind = self._kinds.get(project) or "image"
        body = self._call("POST", f"/api/tasks/{task_id}/annotations", json={
            "result": [{"from_name": CONTROL, "to_name": kind, "type": "choices",
                        "value": {"choices": [label]}}],
            **({"lead_time": lead_time_s} if lead_time_s is not None else {})})
        return str(body["id"])

    def register_webhook(self, project: str, url: str, headers: dict[str, str]) -> str:
        """Have Label Studio POST to ``url`` (with ``headers``) whenever an annotation of
        ``project`` is created or updated; an existing hook to the same URL gets the new
        headers (a restarted CL server issues a new token). Returns the webhook's id."""
        settings = {"project": int(project), "url": url, "send_payload": False,
                    "send_for_all_actions": False, "headers": headers, "is_active": True,
                    "actions": ["ANNOTATION_CREATED", "ANNOTATIONS_CREATED",
                                "ANNOTATION_UPDATED"]}
        hooks = self._call("GET", "/api/webhooks", params={"project": project}) or []
        for hook in hooks:
            if hook.get("url") == url:
                self._call("PATCH", f"/api/webhooks/{hook['id']}", json=settings)
                return str(hook["id"])
        return str(self._call("POST", "/api/webhooks", json=settings)["id"])

    def close(self) -> None:
        self.session.close()
