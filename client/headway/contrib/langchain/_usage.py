"""Tokens and cost of one model call, read from what langchain-core returns.

Chat models put usage on the message (`AIMessage.usage_metadata`); older LLM
wrappers put it in `LLMResult.llm_output["token_usage"]`. Either is counted, never
both for the same call. A price table turns the tokens into a cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult


@dataclass(frozen=True)
class Price:
    """What a model costs, per million input and output tokens (in any one currency)."""

    input: float
    output: float


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    model: str = ""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def cost(self, prices: Mapping[str, Price]) -> float | None:
        price = prices.get(self.model)
        if price is None:
            return None
        return (self.input_tokens * price.input + self.output_tokens * price.output) / 1e6


def usage_of(result: LLMResult, model: str = "") -> Usage:
    """The tokens a call used, and the model that says so (else `model`, from its start)."""
    inputs = outputs = 0
    for generations in result.generations:
        for generation in generations:
            if isinstance(generation, ChatGeneration) and isinstance(generation.message, AIMessage):
                message = generation.message
                if message.usage_metadata:
                    inputs += message.usage_metadata.get("input_tokens", 0)
                    outputs += message.usage_metadata.get("output_tokens", 0)
                model = str(message.response_metadata.get("model_name") or model)
    if not inputs and not outputs and result.llm_output:
        usage: Any = result.llm_output.get("token_usage") or {}
        inputs = int(usage.get("prompt_tokens", 0))
        outputs = int(usage.get("completion_tokens", 0))
        model = str(result.llm_output.get("model_name") or model)
    return Usage(inputs, outputs, model)


def model_of(serialized: Mapping[str, Any] | None, extra: Mapping[str, Any]) -> str:
    """The model a call is about to use, from its invocation parameters."""
    params = extra.get("invocation_params") or {}
    for key in ("model", "model_name", "model_id"):
        if params.get(key):
            return str(params[key])
    metadata = extra.get("metadata") or {}
    return str(metadata.get("ls_model_name") or "")


__all__ = ["Price", "Usage", "model_of", "usage_of"]
