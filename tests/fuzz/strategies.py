"""Hypothesis strategies for requests to every RPC of headway.v1.TaskService.

Everything is derived from the message descriptors: `requests(method)` walks the
method's input message field by field, recursively, and draws for each field a
value that is valid, on an edge, or hostile:

- integers: 0, -1, the int32/int64 extremes, huge values, and small ordinary ones;
- doubles: NaN, the infinities, -0.0, huge and tiny values, ordinary fractions;
- strings: empty, NUL characters, lengths around every limit the server documents,
  unicode, path-like and format-like text, and random text;
- enums: every declared value and numbers the enum does not declare;
- `google.protobuf.Timestamp` / `Duration`: ordinary values and out-of-range ones
  (year 1, year 9999 and beyond, the int64 extremes, nanos -1 and 1e9);
- repeated fields and maps: 0 to a few entries, sometimes a bulk just under or
  over the server's count limits; oneofs: none or one member; optional fields
  set or unset.

Fields are recognised by name where it matters: task ids are mostly drawn from
a small pool (`POOL_IDS`) that the runner creates before each example in a
drawn state (`PoolState`), and step keys from the keys those tasks have
(`STEP_KEYS`), so a good share of requests get past NOT_FOUND and reach the
state machines. `raw_payloads` builds bytes a well-behaved client cannot send:
invalid UTF-8 in any string field, truncated messages, wrong wire types, garbage.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from headway.v1 import task_service_pb2

SERVICE = task_service_pb2.DESCRIPTOR.services_by_name["TaskService"]
METHODS: tuple[MethodDescriptor, ...] = tuple(SERVICE.methods)
METHOD_NAMES: tuple[str, ...] = tuple(method.name for method in METHODS)

POOL_SIZE = 3
POOL_IDS: tuple[str, ...] = tuple(f"pool-{i}" for i in range(POOL_SIZE))
# Every pool task is created with these steps; the fuzzer also draws keys it does not have.
STEP_KEYS: tuple[str, ...] = ("a", "b", "c")
NEW_STEP_KEYS: tuple[str, ...] = ("d", "e")
KINDS: tuple[str, ...] = ("fuzz", "build")
# The benign writer's tasks; the fuzzer never draws an id with this prefix.
BENIGN_PREFIX = "benign-"

# Fields whose string values name tasks; the runner maps pool ids to real ids in them.
ID_FIELDS = frozenset({"task_id", "parent_id", "task_ids"})

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT32_MAX, UINT64_MAX = 2**32 - 1, 2**64 - 1

# Seconds since the epoch of 0001-01-01T00:00:00Z and of 9999-12-31T23:59:59Z,
# the range google.protobuf.Timestamp allows; and Duration's +-10000 years.
TIMESTAMP_MIN_SECONDS = -62_135_596_800
TIMESTAMP_MAX_SECONDS = 253_402_300_799
DURATION_MAX_SECONDS = 315_576_000_000
NOW_SECONDS = 1_760_000_000  # Late 2025: a plausible "now" for ordinary values.

MAX_DEPTH = 4
# Counts around the limits the server documents (labels 32, metrics 64,
# artifacts 256, steps / log lines / filter values 1000).
BULK_SIZES: tuple[int, ...] = (33, 65, 257, 1000, 1001)


class PoolState(enum.Enum):
    """The state the runner puts a pool task in before an example's calls."""

    # Live states first: hypothesis favours the first choices.
    RUNNING = "running"  # Started, step `a` running at 40 %.
    PENDING = "pending"
    PROGRESSED = "progressed"  # Running: `a` succeeded, `b` failed, `c` at 3 of 10 units.
    CANCEL_REQUESTED = "cancel_requested"  # Running, with a pending cancel request.
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DELETED = "deleted"  # Succeeded, then deleted.
    ABSENT = "absent"  # Never created.


class RawKind(enum.Enum):
    """How `RawPayload` corrupts the serialized request."""

    INVALID_UTF8 = "invalid_utf8"  # A string field (at `path`) whose bytes are not UTF-8.
    TRUNCATED = "truncated"  # The serialized request cut short.
    WRONG_WIRE_TYPE = "wrong_wire_type"  # A known field number with another wire type.
    GARBAGE = "garbage"  # Arbitrary bytes instead of a request.


@dataclass(frozen=True)
class RawPayload:
    """A recipe for corrupt bytes, applied to the request after pool ids are mapped."""

    kind: RawKind
    path: tuple[str, ...] = ()  # Field names from the request down to a string field.
    data: bytes = b""  # The invalid UTF-8, or the garbage.
    cut: float = 0.5  # For TRUNCATED: the fraction kept.

    def apply(self, request: Message) -> bytes:
        valid = request.SerializeToString()
        match self.kind:
            case RawKind.INVALID_UTF8:
                descriptor = request.DESCRIPTOR
                return valid + _nested_string(descriptor, self.path, self.data)
            case RawKind.TRUNCATED:
                # Cut at least one byte, so that a non-empty message is really truncated.
                return valid[: max(0, min(len(valid) - 1, int(len(valid) * self.cut)))]
            case RawKind.WRONG_WIRE_TYPE:
                number = request.DESCRIPTOR.fields[0].number
                # Field 1 as a 64-bit fixed value, then as a start group: neither is a string.
                return _varint(number << 3 | 1) + self.data[:8].ljust(8, b"\0") + valid
            case RawKind.GARBAGE:
                return self.data


@dataclass(frozen=True)
class Call:
    """One RPC: the method's name, the request, and, for raw calls, how to corrupt it."""

    method: str
    request: Message
    raw: RawPayload | None = None

    def describe(self) -> str:
        from google.protobuf import text_format

        text = text_format.MessageToString(self.request, as_one_line=True, as_utf8=True)
        if len(text) > 600:
            text = text[:600] + f"... ({len(text)} characters)"
        if self.raw is not None:
            detail = f"{self.raw.kind.value}"
            if self.raw.path:
                detail += f" at {'.'.join(self.raw.path)}"
            if self.raw.data:
                detail += f" {self.raw.data[:24]!r}"
            if self.raw.kind is RawKind.TRUNCATED:
                detail += f" keeping {self.raw.cut:.2f}"
            return f"{self.method} raw[{detail}] of {{{text}}}"
        return f"{self.method} {{{text}}}"


@dataclass(frozen=True)
class Example:
    """What one example does: put the pool tasks in a state, then send a few calls."""

    states: tuple[PoolState, ...]
    calls: tuple[Call, ...] = field(default_factory=tuple)


# -- scalars ------------------------------------------------------------------------

LIMIT_LENGTHS = (63, 64, 65, 128, 129, 256, 257, 1024, 1025, 2048, 2049, 4096, 4097, 8192, 8193)

edge_texts: st.SearchStrategy[str] = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "ünïcødé ✓ 😀",
        "\u202eevil",
        "\ufeffbom",
        "../../etc/passwd",
        "%s%n{0}",
        "' OR 1=1 --",
        "UPPER_SNAKE",
        "line\nbreak",
        "\t",
    ]
)
long_texts: st.SearchStrategy[str] = st.builds(
    lambda char, length: char * length,
    st.sampled_from(["x", "é", "😀"]),
    st.sampled_from(LIMIT_LENGTHS),
)
plain_texts: st.SearchStrategy[str] = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=24
)
texts: st.SearchStrategy[str] = st.one_of(
    edge_texts, st.text(max_size=12), long_texts, st.text(alphabet="ab-_.", max_size=6)
)

valid_ids: st.SearchStrategy[str] = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,10}", fullmatch=True)
invalid_ids: st.SearchStrategy[str] = st.sampled_from(
    ["-leading-dash", ".dot", "has space", "slash/id", "ünï", "x" * 129, "a\x00b", "\n"]
)
pool_ids: st.SearchStrategy[str] = st.sampled_from(POOL_IDS)
task_ids: st.SearchStrategy[str] = st.one_of(
    pool_ids, pool_ids, pool_ids, pool_ids, pool_ids, st.just(""), valid_ids, invalid_ids
).filter(lambda value: not value.startswith(BENIGN_PREFIX))
step_keys: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(STEP_KEYS),
    st.sampled_from(STEP_KEYS),
    st.sampled_from(STEP_KEYS),
    st.sampled_from(NEW_STEP_KEYS),
    st.sampled_from(["", "A", "-a", "a b", "k" * 63, "k" * 64, "ü"]),
    texts,
)
request_ids: st.SearchStrategy[str] = st.one_of(
    st.just(""),
    st.just(""),
    st.sampled_from(["rid-1", "rid-2"]),  # Reused across calls: replays or REQUEST_ID_REUSED.
    st.uuids().map(str),
    texts,
)
valid_label_keys: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(["env", "team", "cost", "tokens"]),
    st.from_regex(r"[a-z][a-z0-9._/-]{0,8}", fullmatch=True),
)
label_keys: st.SearchStrategy[str] = st.one_of(valid_label_keys, texts)
page_tokens: st.SearchStrategy[str] = st.one_of(
    st.just(""),
    st.sampled_from(["AAAA", "not-a-token", "eyJ4IjoxfQ==", "////", "=" * 10]),
    texts,
)

edge_int64: st.SearchStrategy[int] = st.sampled_from(
    [INT64_MAX, -1, INT64_MIN, 10**15, INT32_MAX + 1, INT32_MAX, INT32_MIN, INT64_MAX - 1, 0, 1]
)
edge_int32: st.SearchStrategy[int] = st.sampled_from([INT32_MAX, -1, INT32_MIN, 1001, 1000, 0, 1])
small_ints: st.SearchStrategy[int] = st.integers(min_value=0, max_value=20)
revisions: st.SearchStrategy[int] = st.one_of(
    st.just(0), st.just(0), st.just(0), small_ints, edge_int64
)

edge_doubles: st.SearchStrategy[float] = st.sampled_from(
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        1e308,
        -1.0,
        1.0000000001,
        -1e308,
        5e-324,
        1e6 + 1,
        1e6,
        -0.0,
        0.0,
        1.0,
        0.5,
    ]
)
fractions: st.SearchStrategy[float] = st.one_of(
    edge_doubles, st.floats(min_value=0.0, max_value=1.0)
)
doubles: st.SearchStrategy[float] = st.one_of(edge_doubles, st.floats(), fractions)

# Hostile values come first: hypothesis favours the first choices of a strategy.
timestamp_seconds: st.SearchStrategy[int] = st.one_of(
    st.sampled_from(
        [
            TIMESTAMP_MAX_SECONDS,  # Year 9999.
            INT64_MAX,
            TIMESTAMP_MIN_SECONDS,  # Year 1.
            TIMESTAMP_MAX_SECONDS + 1,
            TIMESTAMP_MIN_SECONDS - 1,
            INT64_MIN,
            TIMESTAMP_MAX_SECONDS - 86_400,
            -1,
            0,
        ]
    ),
    st.integers(min_value=NOW_SECONDS - 86_400, max_value=NOW_SECONDS + 86_400),
)
duration_seconds: st.SearchStrategy[int] = st.one_of(
    st.sampled_from(
        [
            INT64_MAX,
            10**14,  # Beyond what datetime.timedelta holds (about 8.6e13 s).
            -1,
            DURATION_MAX_SECONDS + 1,
            INT64_MIN,
            2**62,
            DURATION_MAX_SECONDS,
            -DURATION_MAX_SECONDS - 1,
            86_400 * 365 * 100,
            0,
            1,
        ]
    ),
    st.integers(min_value=0, max_value=7200),
)
hostile_nanos: st.SearchStrategy[int] = st.one_of(
    st.sampled_from([-1, 1_000_000_000, INT32_MAX, INT32_MIN, 999_999_999]),
    st.just(0),
    st.integers(min_value=0, max_value=999_999_999),
)


def _string_for(name: str) -> st.SearchStrategy[str]:
    if name in ID_FIELDS:
        return task_ids
    if name in ("step_key", "key"):
        return step_keys
    if name == "request_id":
        return request_ids
    if name in ("kind", "kinds"):
        return st.one_of(st.sampled_from(KINDS), texts)
    if name == "page_token":
        return page_tokens
    return texts


def _valid_string_for(name: str) -> st.SearchStrategy[str]:
    if name == "parent_id":
        return st.one_of(st.just(""), pool_ids)
    if name in ID_FIELDS:
        return st.one_of(pool_ids, pool_ids, pool_ids, valid_ids)
    if name in ("step_key", "key"):
        return st.sampled_from(STEP_KEYS + NEW_STEP_KEYS)
    if name == "request_id":
        return st.one_of(st.just(""), st.uuids().map(str))
    if name in ("kind", "kinds"):
        return st.sampled_from(KINDS)
    if name == "page_token":
        return st.just("")
    if name in ("code",):
        return st.sampled_from(["TIMEOUT", "OUT_OF_MEMORY"])
    if name in ("uri",):
        return st.sampled_from(["s3://bucket/report.pdf", "https://example.com/x"])
    return plain_texts


def _int_for(name: str, bits: int) -> st.SearchStrategy[int]:
    if name == "expected_revision":
        return revisions
    return st.one_of(edge_int32 if bits == 32 else edge_int64, small_ints)


def _valid_int_for(name: str) -> st.SearchStrategy[int]:
    if name == "expected_revision":
        return st.just(0)
    if name == "total":
        return st.integers(min_value=1, max_value=100)
    return st.integers(min_value=0, max_value=50)


def _enum_numbers(field_descriptor: FieldDescriptor, hostile: bool) -> st.SearchStrategy[int]:
    assert field_descriptor.enum_type is not None
    declared = [value.number for value in field_descriptor.enum_type.values]
    if not hostile:
        return st.sampled_from(declared)
    return st.one_of(
        st.sampled_from(declared),
        st.sampled_from([-1, max(declared) + 1, 99, INT32_MAX, INT32_MIN]),
    )


_INT64_TYPES = (
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
)
_INT32_TYPES = (
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SFIXED32,
)


def _scalar(field_descriptor: FieldDescriptor, hostile: bool = True) -> st.SearchStrategy[Any]:
    """Values for a scalar field: ordinary ones, or (`hostile`) edges and garbage too."""
    name = field_descriptor.name
    kind = field_descriptor.type
    if kind == FieldDescriptor.TYPE_STRING:
        return _string_for(name) if hostile else _valid_string_for(name)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=16)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        return _enum_numbers(field_descriptor, hostile)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if name in ("fraction", "weight", "confidence"):
            return fractions if hostile else st.floats(min_value=0.0, max_value=1.0)
        return doubles if hostile else st.floats(min_value=-1e6, max_value=1e6)
    if kind in _INT64_TYPES:
        return _int_for(name, 64) if hostile else _valid_int_for(name)
    if kind in _INT32_TYPES:
        return _int_for(name, 32) if hostile else _valid_int_for(name)
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.one_of(small_ints, st.just(UINT64_MAX)) if hostile else small_ints
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.one_of(small_ints, st.just(UINT32_MAX)) if hostile else small_ints
    raise NotImplementedError(f"no strategy for field {field_descriptor.full_name}")


# -- messages -----------------------------------------------------------------------


def _type_of(fd: FieldDescriptor) -> Descriptor:
    """The message type of a message field."""
    assert fd.message_type is not None, fd.full_name
    return fd.message_type


def message_class(descriptor: Descriptor) -> type[Message]:
    cls: type[Message] = message_factory.GetMessageClass(descriptor)
    return cls


WELL_KNOWN = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration"})


def _well_known(descriptor: Descriptor, hostile: bool) -> st.SearchStrategy[Message] | None:
    cls = message_class(descriptor)
    valid_nanos = st.integers(min_value=0, max_value=999_999_999)
    if descriptor.full_name == "google.protobuf.Timestamp":
        if not hostile:
            ordinary = st.integers(min_value=NOW_SECONDS - 86_400, max_value=NOW_SECONDS + 86_400)
            return st.builds(lambda s, n: cls(seconds=s, nanos=n), ordinary, valid_nanos)
        return st.builds(lambda s, n: cls(seconds=s, nanos=n), timestamp_seconds, hostile_nanos)
    if descriptor.full_name == "google.protobuf.Duration":
        if not hostile:
            ordinary = st.integers(min_value=0, max_value=7200)
            return st.builds(lambda s, n: cls(seconds=s, nanos=n), ordinary, valid_nanos)
        return st.builds(lambda s, n: cls(seconds=s, nanos=n), duration_seconds, hostile_nanos)
    return None


def _is_map(field_descriptor: FieldDescriptor) -> bool:
    message_type = field_descriptor.message_type
    return message_type is not None and message_type.GetOptions().map_entry


def _bulk(items: list[Any], size: int) -> list[Any]:
    """`size` entries cloned from `items[0]`, with distinct strings, to hit count limits."""
    first = items[0]
    if isinstance(first, str):
        return [f"{first}{i}" for i in range(size)]
    if isinstance(first, Message):
        clones = []
        for i in range(size):
            clone = type(first)()
            clone.CopyFrom(first)
            for fd, value in clone.ListFields():
                if fd.type == FieldDescriptor.TYPE_STRING and not fd.is_repeated:
                    setattr(clone, fd.name, f"{value}{i}" if value else f"x{i}")
            clones.append(clone)
        return clones
    return [first] * size


Path = tuple[str, ...]


@dataclass
class HostilityPlan:
    """Which fields of one request get hostile values.

    The field at path `single` (field names from the request down) is set and
    hostile, and every other field is hostile with a chance of `per_ten` in ten.
    Most requests are ordinary but for that one field, so that they get past
    validation to the state machines and the store; some are ordinary
    throughout, some hostile throughout.
    """

    per_ten: int = 0
    single: Path | None = None

    def on_route(self, path: Path) -> bool:
        return self.single is not None and self.single[: len(path)] == path


@st.composite
def _hostile(draw: st.DrawFn, plan: HostilityPlan, path: Path) -> bool:
    if path == plan.single or plan.per_ten >= 10:
        return True
    if plan.per_ten <= 0:
        return False
    return draw(st.integers(min_value=0, max_value=9)) < plan.per_ten


def leaf_paths(descriptor: Descriptor, depth: int = 0) -> list[Path]:
    """The fields a plan may single out, weighted: times and durations five times,
    numbers twice (their edges are where conversions overflow), others once.
    A repeated field is a leaf itself too (its count), and a map's key and value."""
    leaves: list[Path] = []
    for fd in descriptor.fields:
        name = fd.name
        if _is_map(fd):
            leaves += [(name, "key"), (name, "value")]
            continue
        if fd.is_repeated and depth == 0:
            leaves.append((name,))
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if _type_of(fd).full_name in WELL_KNOWN:
                leaves += [(name,)] * 5
            elif depth < MAX_DEPTH:
                leaves += [(name, *rest) for rest in leaf_paths(_type_of(fd), depth + 1)]
        elif fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BOOL):
            leaves.append((name,))
        else:
            leaves += [(name,)] * 2
    return leaves


def plans(descriptor: Descriptor) -> st.SearchStrategy[HostilityPlan]:
    singled = st.builds(HostilityPlan, single=st.sampled_from(leaf_paths(descriptor)))
    return st.one_of(
        singled,
        singled,
        singled,
        singled,
        st.builds(HostilityPlan),
        st.builds(HostilityPlan, per_ten=st.sampled_from([1, 2, 3])),
        st.builds(HostilityPlan, per_ten=st.just(10)),
    )


@st.composite
def _field_value(
    draw: st.DrawFn, fd: FieldDescriptor, depth: int, plan: HostilityPlan, path: Path
) -> Any:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        if _type_of(fd).full_name in WELL_KNOWN:
            special = _well_known(_type_of(fd), draw(_hostile(plan, path)))
            assert special is not None
            return draw(special)
        return draw(messages(_type_of(fd), depth + 1, plan, path))
    return draw(_scalar(fd, draw(_hostile(plan, path))))


@st.composite
def messages(
    draw: st.DrawFn,
    descriptor: Descriptor,
    depth: int = 0,
    plan: HostilityPlan | None = None,
    path: Path = (),
) -> Message:
    """A message of `descriptor`'s type; `plan` says which fields get hostile values."""
    if plan is None:
        plan = HostilityPlan(per_ten=10)
    message = message_class(descriptor)()
    if depth > MAX_DEPTH:
        return message
    chosen_oneof_members: set[str] = set()
    for oneof in descriptor.oneofs:
        if oneof.name.startswith("_"):
            continue  # A proto3 `optional` field's synthetic oneof.
        routed = [f.name for f in oneof.fields if plan.on_route((*path, f.name))]
        member = (
            routed[0]
            if routed
            else draw(st.none() | st.sampled_from([f.name for f in oneof.fields]))
        )
        if member is not None:
            chosen_oneof_members.add(member)
    for fd in descriptor.fields:
        here = (*path, fd.name)
        owner = fd.containing_oneof
        if owner is not None and not owner.name.startswith("_"):
            if fd.name not in chosen_oneof_members:
                continue
        elif fd.is_repeated:
            _draw_repeated(draw, message, fd, depth, plan, here)
            continue
        elif fd.has_presence and not plan.on_route(here) and not draw(st.booleans()):
            continue  # Left unset.
        value = draw(_field_value(fd, depth, plan, here))
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(message, fd.name).CopyFrom(value)
        else:
            setattr(message, fd.name, value)
    return message


def _draw_repeated(
    draw: st.DrawFn,
    message: Message,
    fd: FieldDescriptor,
    depth: int,
    plan: HostilityPlan,
    path: Path,
) -> None:
    routed = plan.on_route(path)
    bulk = depth == 0 and draw(_hostile(plan, path)) and draw(st.integers(0, 3)) == 0
    if _is_map(fd):
        key_fd = _type_of(fd).fields_by_name["key"]
        value_fd = _type_of(fd).fields_by_name["value"]
        if key_fd.type == FieldDescriptor.TYPE_STRING:
            keys = label_keys if draw(_hostile(plan, (*path, "key"))) else valid_label_keys
        else:
            keys = _scalar(key_fd)
        values = _field_value(value_fd, depth, plan, (*path, "value"))
        entries = draw(st.dictionaries(keys, values, min_size=1 if routed else 0, max_size=3))
        if entries and bulk:
            key, value = next(iter(entries.items()))
            size = draw(st.sampled_from(BULK_SIZES[:2]))
            entries = {f"{key}{i}": value for i in range(size)}
        container = getattr(message, fd.name)
        for key, value in entries.items():
            if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                container[key].CopyFrom(value)
            else:
                container[key] = value
        return
    # Ordinary requests carry at least one step, log line or artifact.
    ordinary = not draw(_hostile(plan, path))
    at_least = 1 if routed or (fd.type == FieldDescriptor.TYPE_MESSAGE and ordinary) else 0
    element = _field_value(fd, depth, plan, path)
    items = draw(st.lists(element, min_size=at_least, max_size=3))
    if items and bulk:
        items = _bulk(items, draw(st.sampled_from(BULK_SIZES)))
    container = getattr(message, fd.name)
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        for item in items:
            container.add().CopyFrom(item)
    else:
        container.extend(items)


def request_class(method: MethodDescriptor) -> type[Message]:
    return message_class(method.input_type)


def requests(method: MethodDescriptor) -> st.SearchStrategy[Message]:
    """Requests for `method`, drawn from its input message descriptor."""
    return plans(method.input_type).flatmap(lambda plan: messages(method.input_type, 0, plan))


# -- raw bytes ----------------------------------------------------------------------

INVALID_UTF8: tuple[bytes, ...] = (
    b"\xff",
    b"\xc3\x28",  # A lead byte followed by a non-continuation byte.
    b"\xc0\xaf",  # Overlong encoding of '/'.
    b"\xed\xa0\x80",  # A UTF-16 surrogate, encoded.
    b"\xf4\x90\x80\x80",  # Beyond U+10FFFF.
    b"ok\x80",  # A lone continuation byte after valid text.
    b"\xe2\x82",  # Truncated sequence.
)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _nested_string(descriptor: Descriptor, path: Sequence[str], data: bytes) -> bytes:
    """The encoding of a message setting the string field at `path` to `data`."""
    fd = descriptor.fields_by_name[path[0]]
    if len(path) == 1:
        return _length_delimited(fd.number, data)
    return _length_delimited(fd.number, _nested_string(_type_of(fd), path[1:], data))


def string_paths(descriptor: Descriptor, depth: int = 0) -> list[tuple[str, ...]]:
    """Paths from `descriptor` to every string field it (transitively) contains."""
    paths: list[tuple[str, ...]] = []
    for fd in descriptor.fields:
        if fd.type == FieldDescriptor.TYPE_STRING:
            paths.append((fd.name,))
        elif fd.type == FieldDescriptor.TYPE_MESSAGE and depth < 3:
            paths.extend((fd.name, *rest) for rest in string_paths(_type_of(fd), depth + 1))
    return paths


def raw_payloads(method: MethodDescriptor) -> st.SearchStrategy[RawPayload]:
    paths = string_paths(method.input_type)
    utf8 = st.builds(
        lambda path, data: RawPayload(RawKind.INVALID_UTF8, path=path, data=data),
        st.sampled_from(paths),
        st.sampled_from(INVALID_UTF8),
    )
    return st.one_of(
        utf8,
        utf8,
        utf8,
        st.builds(
            lambda cut: RawPayload(RawKind.TRUNCATED, cut=cut),
            st.floats(min_value=0.05, max_value=0.95),
        ),
        st.builds(
            lambda data: RawPayload(RawKind.WRONG_WIRE_TYPE, data=data), st.binary(max_size=8)
        ),
        st.builds(
            lambda data: RawPayload(RawKind.GARBAGE, data=data), st.binary(min_size=1, max_size=40)
        ),
    )


# -- calls and examples -------------------------------------------------------------

_BY_NAME: dict[str, MethodDescriptor] = {method.name: method for method in METHODS}


def method_named(name: str) -> MethodDescriptor:
    return _BY_NAME[name]


@st.composite
def calls(draw: st.DrawFn, methods: Sequence[str] = METHOD_NAMES) -> Call:
    """A call of any RPC: usually a well-formed (if hostile) request, sometimes raw bytes."""
    name = draw(st.sampled_from(list(methods)))
    method = _BY_NAME[name]
    request = draw(requests(method))
    raw = draw(st.none() | st.none() | st.none() | st.none() | st.none() | raw_payloads(method))
    return Call(name, request, raw)


pool_states: st.SearchStrategy[PoolState] = st.sampled_from(list(PoolState))


def examples(
    max_calls: int = 3, call_strategy: Callable[[], st.SearchStrategy[Call]] = calls
) -> st.SearchStrategy[Example]:
    """Pool states, then 1 to `max_calls` calls against them."""
    return st.builds(
        Example,
        states=st.tuples(*(pool_states for _ in POOL_IDS)),
        calls=st.lists(call_strategy(), min_size=1, max_size=max_calls).map(tuple),
    )
