"""headway.contrib.langchain with langchain-core's fake chat models and a small LangGraph graph.

No network: the models answer from a list, and report token usage as a real chat
model does (on the AIMessage). The handler reports to the real test server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, TypedDict

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph

from headway.client import HeadwayClient, TaskCancelled
from headway.contrib import Reporter
from headway.contrib.langchain import HeadwayCallbackHandler, Price
from headway.v1 import task_pb2
from tests.contrib.conftest import at_rest, wait_for_task


class State(TypedDict):
    question: str
    answer: str
    rounds: int


def answers(*texts: str) -> Iterator[AIMessage]:
    for text in texts:
        yield AIMessage(
            text,
            usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
            response_metadata={"model_name": "fake-1"},
        )


@tool
def lookup(term: str) -> str:
    """Look a term up."""
    return f"{term}: a small furry animal"


def build(model: GenericFakeChatModel, *, fail_in: str = "") -> Any:
    def research(state: State) -> dict[str, Any]:
        lookup.invoke({"term": state["question"]})
        return {"rounds": state["rounds"] + 1}

    def write(state: State) -> dict[str, Any]:
        if fail_in == "write":
            raise RuntimeError("the writer quit")
        reply = model.invoke(state["question"])
        again = model.invoke("shorter")
        return {"answer": f"{reply.content} / {again.content}"}

    graph = StateGraph(State)
    graph.add_node("research", research)
    graph.add_node("write", write)
    graph.add_edge(START, "research")
    graph.add_edge("research", "write")
    graph.add_edge("write", END)
    return graph.compile()


async def test_nodes_tools_and_model_calls_are_steps_with_token_metrics(
    reporter: Reporter, client: HeadwayClient, task_id: str
) -> None:
    model = GenericFakeChatModel(messages=answers("a cat", "cat"))
    graph = build(model)
    handler = HeadwayCallbackHandler(
        task_id,
        kind="qa",
        labels={"team": "support"},
        prices={"fake-1": Price(input=3.0, output=15.0)},
        reporter=reporter,
    )
    state = await asyncio.to_thread(
        graph.invoke, {"question": "cat", "answer": "", "rounds": 0}, {"callbacks": [handler]}
    )
    assert state["answer"] == "a cat / cat"
    done = await wait_for_task(client, task_id, at_rest)
    assert done.state == task_pb2.TASK_STATE_SUCCEEDED
    assert done.kind == "qa"
    assert done.labels["team"] == "support"
    names = [s.display_name.rsplit(" ", 1)[0] for s in done.steps]
    assert names == ["research", "lookup", "write", "GenericFakeChatModel", "GenericFakeChatModel"]
    assert all(s.state == task_pb2.STEP_STATE_SUCCEEDED for s in done.steps)
    assert done.steps[0].key.startswith("research-")
    assert done.metrics["tokens.input"] == 20
    assert done.metrics["tokens.output"] == 10
    assert done.metrics["tokens.total"] == 30
    assert done.metrics["cost"] == pytest.approx((20 * 3.0 + 10 * 15.0) / 1e6)


async def test_an_error_fails_its_step_and_the_task(
    reporter: Reporter, client: HeadwayClient, task_id: str
) -> None:
    graph = build(GenericFakeChatModel(messages=answers("x")), fail_in="write")
    handler = HeadwayCallbackHandler(task_id, reporter=reporter)
    with pytest.raises(RuntimeError, match="the writer quit"):
        await asyncio.to_thread(
            graph.invoke, {"question": "cat", "answer": "", "rounds": 0}, {"callbacks": [handler]}
        )
    failed = await wait_for_task(client, task_id, at_rest)
    assert failed.state == task_pb2.TASK_STATE_FAILED
    assert failed.error.code == "RuntimeError"
    assert failed.error.message == "the writer quit"
    write = next(s for s in failed.steps if s.key.startswith("write-"))
    assert write.state == task_pb2.STEP_STATE_FAILED
    assert write.error.message == "the writer quit"
    research = next(s for s in failed.steps if s.key.startswith("research-"))
    assert research.state == task_pb2.STEP_STATE_SUCCEEDED


async def test_a_viewers_cancel_stops_the_graph(
    reporter: Reporter, client: HeadwayClient, task_id: str
) -> None:
    ran: list[int] = []

    def work(state: State) -> dict[str, Any]:
        ran.append(state["rounds"])
        time.sleep(0.05)
        return {"rounds": state["rounds"] + 1}

    graph = StateGraph(State)
    graph.add_node("work", work)
    graph.add_edge(START, "work")
    graph.add_conditional_edges("work", lambda s: END if s["rounds"] >= 400 else "work")
    compiled = graph.compile()
    handler = HeadwayCallbackHandler(task_id, reporter=reporter)
    config: Any = {"callbacks": [handler], "recursion_limit": 1000}
    running = asyncio.create_task(
        asyncio.to_thread(compiled.invoke, {"question": "", "answer": "", "rounds": 0}, config)
    )
    await wait_for_task(client, task_id, lambda t: len(t.steps) >= 3)
    await client.cancel_task(task_id, reason="enough")
    with pytest.raises(TaskCancelled):
        await asyncio.wait_for(running, 15)
    assert len(ran) < 400
    cancelled = await wait_for_task(client, task_id, at_rest)
    assert cancelled.state == task_pb2.TASK_STATE_CANCELLED
    assert not cancelled.cancel_request.forced
    assert cancelled.cancel_request.reason == "enough"
