"""How a Celery task run is named in Headway: its id, kind and labels.

The id is derived from the Celery task id alone, so that any process — the worker
running the task, a child task naming its parent, the worker that sees it revoked —
finds the same Headway task without asking anyone. Celery ids are UUIDs, which are
valid Headway ids as they are; anything else (a caller may choose its own id) is
hashed into one.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "celery-"

_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}")
_NOT_KIND = re.compile(r"[^A-Za-z0-9._:/-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MAX_KIND = 128
_MAX_LABEL_VALUE = 256


def task_id_of(celery_task_id: str) -> str:
    """The id of the Headway task that reports the Celery task with this id."""
    if _PLAIN_ID.fullmatch(celery_task_id):
        return PREFIX + celery_task_id
    return PREFIX + hashlib.sha256(celery_task_id.encode()).hexdigest()[:40]


def kind_of(task_name: str) -> str:
    """The Celery task's name as a Headway kind ("proj.tasks.add" stays as it is)."""
    return _NOT_KIND.sub("_", task_name).strip("_")[:_MAX_KIND]


def label_value(text: str) -> str:
    """A label value from any text: no control characters, at most 256 characters."""
    return _CONTROL.sub(" ", text).strip()[:_MAX_LABEL_VALUE]


def labels_of(queue: str | None, worker: str | None) -> dict[str, str]:
    """The labels of a run: the queue it came from and the worker that runs it."""
    labels = {"queue": label_value(queue or ""), "worker": label_value(worker or "")}
    return {key: value for key, value in labels.items() if value}


__all__ = ["PREFIX", "kind_of", "label_value", "labels_of", "task_id_of"]
