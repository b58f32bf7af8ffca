"""LangChain and LangGraph runs that report to Headway: `pip install 'headway[langchain]'`.

    from headway.contrib.langchain import HeadwayCallbackHandler

    handler = HeadwayCallbackHandler("support-reply-42", kind="support-reply")
    graph.invoke(state, {"callbacks": [handler]})

The graph's nodes, chains, tools and model calls become steps as they run, model
calls add tokens (and, with `prices`, cost) to the task's metrics, an error fails
its step and the task, and a cancel in Headway stops the run with TaskCancelled.
"""

from headway.contrib.langchain._handler import HeadwayCallbackHandler
from headway.contrib.langchain._usage import Price

__all__ = ["HeadwayCallbackHandler", "Price"]
