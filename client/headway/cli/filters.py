"""The filter flags shared by `watch` and `tasks`, turned into a TaskFilter.

Values are checked here only as far as the command line must (a label needs
KEY=VALUE, a state must exist); everything else is the server's to judge, and its
field violations come back as one readable line.
"""

from __future__ import annotations

import argparse

from headway.client import task_filter
from headway.client.models import LogLevel, TaskState
from headway.v1 import task_pb2, task_service_pb2

STATE_NAMES = [state.name.lower() for state in TaskState]
LEVEL_NAMES = [level.name.lower() for level in LogLevel]


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task_ids", nargs="*", metavar="TASK_ID", help="only these tasks")
    parser.add_argument(
        "--kind", action="append", default=[], metavar="KIND", help="only tasks of this kind"
    )
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=label,
        help="only tasks with this label (repeat: all must match)",
    )
    parser.add_argument(
        "--state",
        action="append",
        default=[],
        choices=STATE_NAMES,
        help="only tasks in this state (repeat: any may match)",
    )
    parser.add_argument(
        "--parent", default="", metavar="TASK_ID", help="only children of this task"
    )


def label(text: str) -> tuple[str, str]:
    """`key=value` as a pair; argparse reports the error for anything else."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def state_value(name: str) -> task_pb2.TaskState.ValueType:
    return task_pb2.TaskState.ValueType(TaskState[name.upper()].value)


def filter_from(args: argparse.Namespace) -> task_service_pb2.TaskFilter:
    return task_filter(
        task_ids=args.task_ids,
        kinds=args.kind,
        labels=dict(args.label),
        states=[state_value(name) for name in args.state],
        parent_id=args.parent,
    )


__all__ = ["LEVEL_NAMES", "STATE_NAMES", "add_filter_arguments", "filter_from", "label"]
