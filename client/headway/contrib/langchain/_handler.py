"""A LangChain callback handler that reports a run (a chain, a LangGraph graph) to Headway.

Every run LangChain announces — a graph's nodes, chains, tools, model calls — is a
step discovered as it starts (named after the run, with a short run id so that a
node that runs twice is two steps), ended when it ends, failed with its error.
The outermost run is the task: its own task (`task_id`, `kind`, `labels`), or,
when the code runs inside a task already (a Tracker block, a Celery run of
headway.contrib.celery, a tqdm bar), steps of that task. Model calls add their
tokens, and with a price table their cost, to the task's metrics.

A cancel requested in Headway stops the run: the handler raises TaskCancelled at
the next run that starts, and since it sets `raise_error`, LangChain lets it
through to the caller; the task ends CANCELLED, confirmed. Reporting itself never
raises nor waits (see headway.contrib).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from headway.contrib._reporter import Reporter, current, default_reporter
from headway.contrib._session import StepRef, TaskSession
from headway.contrib.langchain._usage import Price, model_of, usage_of

logger = logging.getLogger("headway.contrib.langchain")

HIDDEN_TAG = "langsmith:hidden"
"""LangGraph's tag for its own plumbing (channel writes, branches): not steps."""


class HeadwayCallbackHandler(BaseCallbackHandler):
    """Reports the runs it is given as callbacks: `graph.invoke(x, {"callbacks": [handler]})`.

    Args:
        task_id: The id of the task a run outside any task opens (else made by the
            server). A handler reports one outermost run at a time; each run outside
            any task opens a task of its own, so give a later run another id.
        kind: That task's kind.
        labels: That task's labels.
        display_name: That task's name; the outermost run's name when empty.
        prices: Price per million tokens by model name: the cost goes to the `cost`
            metric of the task.
        reporter: Where to report; the default reporter (from the environment) when None.
    """

    raise_error = True  # so that a TaskCancelled raised here stops the run
    run_inline = True  # in order, in the run's thread

    def __init__(
        self,
        task_id: str = "",
        *,
        kind: str = "",
        labels: Mapping[str, str] | None = None,
        display_name: str = "",
        prices: Mapping[str, Price] | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        self.task_id = task_id
        self.kind = kind
        self.labels = dict(labels or {})
        self.display_name = display_name
        self.prices = dict(prices or {})
        self.reporter = reporter
        self.session: TaskSession | None = None
        self.owns = False
        self.root: UUID | None = None
        self.totals: dict[str, float] = {}
        self._steps: dict[UUID, StepRef] = {}
        self._models: dict[UUID, str] = {}
        self._lock = threading.Lock()

    # -- runs starting ----------------------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(run_id, parent_run_id, _name(serialized, kwargs, "chain"), tags)

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(run_id, parent_run_id, _name(serialized, kwargs, "tool"), tags)

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self._models[run_id] = model_of(serialized, kwargs)
        self._start(run_id, parent_run_id, _name(serialized, kwargs, "model"), tags)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self._models[run_id] = model_of(serialized, kwargs)
        self._start(run_id, parent_run_id, _name(serialized, kwargs, "model"), tags)

    # -- runs ending ------------------------------------------------------------------

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, None)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, None)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            self._count(response, self._models.pop(run_id, ""))
        except Exception:  # an unusual result must not stop the run
            logger.debug("could not read the usage of a model call", exc_info=True)
        self._end(run_id, None)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._models.pop(run_id, None)
        self._end(run_id, error)

    # -- the work ---------------------------------------------------------------------

    def _start(
        self, run_id: UUID, parent_run_id: UUID | None, name: str, tags: list[str] | None
    ) -> None:
        session = self.session
        if session is None and parent_run_id is None:
            session = self._open(name, run_id)
        if session is None:
            return
        cancelled = session.cancelled()
        if cancelled is not None:
            raise cancelled
        if run_id == self.root and self.owns:
            return  # the outermost run is the task itself
        if tags and HIDDEN_TAG in tags:
            return
        with self._lock:
            self._steps[run_id] = session.open_step(f"{name} {run_id.hex[:6]}")

    def _open(self, name: str, run_id: UUID) -> TaskSession | None:
        """The task of the outermost run: the one the code runs in, else one of its own."""
        try:
            where = current(self.reporter)
            if where is not None:
                self.session, self.owns = where.session, False
            else:
                reporter = self.reporter or default_reporter()
                if reporter is None or reporter.closed:
                    return None
                self.session = reporter.task(
                    self.task_id,
                    display_name=self.display_name or name,
                    kind=self.kind,
                    labels=self.labels,
                )
                self.owns = True
        except Exception:
            logger.warning("Headway reporting is off for this run", exc_info=True)
            return None
        self.root = run_id
        return self.session

    def _end(self, run_id: UUID, error: BaseException | None) -> None:
        session = self.session
        if session is None:
            return
        with self._lock:
            step = self._steps.pop(run_id, None)
        if step is not None:
            session.close_step(step, error)
        if run_id == self.root:
            with self._lock:
                open_steps, self._steps = list(self._steps.values()), {}
            for left in open_steps:  # runs that never said they ended
                session.close_step(left, error)
            if self.owns:
                session.close(error)
            self.session, self.root = None, None  # a next run opens its task anew

    def _count(self, response: LLMResult, model: str) -> None:
        session = self.session
        if session is None:
            return
        usage = usage_of(response, model)
        if not usage.total_tokens:
            return
        with self._lock:
            totals = self.totals
            totals["tokens.input"] = totals.get("tokens.input", 0) + usage.input_tokens
            totals["tokens.output"] = totals.get("tokens.output", 0) + usage.output_tokens
            totals["tokens.total"] = totals.get("tokens.total", 0) + usage.total_tokens
            cost = usage.cost(self.prices)
            if cost is not None:
                totals["cost"] = totals.get("cost", 0) + cost
            snapshot = dict(totals)
        session.metrics(snapshot)


def _name(serialized: Mapping[str, Any] | None, extra: Mapping[str, Any], default: str) -> str:
    name = extra.get("name")
    if not name and serialized:
        name = serialized.get("name") or (serialized.get("id") or [default])[-1]
    return str(name or default)


__all__ = ["HIDDEN_TAG", "HeadwayCallbackHandler"]
