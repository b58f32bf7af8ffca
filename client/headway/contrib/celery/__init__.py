"""Celery tasks that report to Headway: `pip install 'headway[celery]'`.

    from headway.contrib.celery import install, progress

    install(app)  # every task of the app; or @app.task(base=HeadwayTask) for a few

    @app.task
    def resize(paths):
        for n, path in enumerate(paths, 1):
            ...
            progress(n, len(paths), message=path)

Each run is a Headway task: its id is `task_id_of(celery_task_id)`, its kind the
task's name, its labels the queue and the worker; a task sent by another task
(a chain's next link, a chord's members, a subtask) is created under the task of
the run that sent it. Runs succeed, fail with their exception, log their retries
(the Headway task stays RUNNING until the last attempt ends), and stop when
cancelled: a cancel in Headway revokes the Celery task and raises `Cancelled` at
the body's next `progress` or `step`; a revoke in Celery ends the Headway task
CANCELLED. Reporting never fails nor slows a task: see headway.contrib.
"""

from headway.contrib.celery._body import progress, step
from headway.contrib.celery._naming import task_id_of
from headway.contrib.celery._runs import REVOKED_REASON, Cancelled, HeadwayTask, install

__all__ = [
    "REVOKED_REASON",
    "Cancelled",
    "HeadwayTask",
    "install",
    "progress",
    "step",
    "task_id_of",
]
