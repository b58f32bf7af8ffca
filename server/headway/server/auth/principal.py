"""Principals, roles and the permissions each role grants.

Every caller is a principal: a name, the tenant it acts in, and a role. The
role decides which calls it may make; the tenant decides which tasks exist for
it at all (a task of another tenant is NOT_FOUND, never PERMISSION_DENIED, so
existence does not leak). A scope narrows a principal further to the tasks a
read-only embedding token was minted for.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from headway.server.errors import HeadwayError, Kind


class Role(enum.Enum):
    """What a principal is for; see ROLE_PERMISSIONS for what each may do."""

    AGENT = "agent"
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


class Permission(enum.Enum):
    READ = "read"  # GetTask, ListTasks, ListLogs, Subscribe
    REPORT = "report"  # create tasks and report on the ones it created
    REPORT_ANY = "report-any"  # report on any task of the tenant
    CANCEL = "cancel"
    DELETE = "delete"


ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    # Automation that runs the work: it reads what it reports on (and its children).
    Role.AGENT: frozenset({Permission.REPORT, Permission.READ}),
    Role.VIEWER: frozenset({Permission.READ}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.CANCEL, Permission.DELETE}),
    Role.ADMIN: frozenset(Permission),
}

# The permission each RPC of headway.v1.TaskService needs.
RPC_PERMISSIONS: Mapping[str, Permission] = {
    "CreateTask": Permission.REPORT,
    "StartTask": Permission.REPORT,
    "AddSteps": Permission.REPORT,
    "UpdateStep": Permission.REPORT,
    "UpdateTask": Permission.REPORT,
    "AppendLogs": Permission.REPORT,
    "AddArtifacts": Permission.REPORT,
    "SucceedTask": Permission.REPORT,
    "FailTask": Permission.REPORT,
    "ConfirmCancel": Permission.REPORT,
    "Heartbeat": Permission.REPORT,
    "CancelTask": Permission.CANCEL,
    "DeleteTask": Permission.DELETE,
    "GetTask": Permission.READ,
    "ListTasks": Permission.READ,
    "ListLogs": Permission.READ,
    "Subscribe": Permission.READ,
    # Minting a read token for what the caller may read; a scoped caller may not (service.py).
    "CreateReadToken": Permission.READ,
}


@dataclass(frozen=True, slots=True)
class Scope:
    """The only tasks a scoped (embedding) principal may see: by id, or by labels.

    A task is in scope when its id is one of `task_ids`, or when `labels` is
    not empty and the task carries every one of them. A scoped principal is
    read-only whatever its role.
    """

    task_ids: frozenset[str] = frozenset()
    labels: tuple[tuple[str, str], ...] = ()

    def covers(self, task_id: str, labels: Mapping[str, str]) -> bool:
        if task_id in self.task_ids:
            return True
        return bool(self.labels) and all(labels.get(k) == v for k, v in self.labels)


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller: who, in which tenant, with which role (and, for embedding tokens, scope)."""

    name: str
    tenant: str
    role: Role
    scope: Scope | None = None
    # The service operator's admin, which may act in any tenant it names.
    cross_tenant: bool = False
    permissions: frozenset[Permission] = field(init=False)

    def __post_init__(self) -> None:
        granted = ROLE_PERMISSIONS[self.role]
        if self.scope is not None:
            granted = granted & {Permission.READ}
        object.__setattr__(self, "permissions", granted)

    def may(self, permission: Permission) -> bool:
        return permission in self.permissions


def authorize(principal: Principal, method: str) -> Permission:
    """The permission `method` needs, if `principal` holds it; PERMISSION_DENIED if not."""
    needed = RPC_PERMISSIONS[method]
    if not principal.may(needed):
        raise permission_denied(principal, needed, method)
    return needed


def permission_denied(principal: Principal, needed: Permission, what: str) -> HeadwayError:
    return HeadwayError(
        Kind.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        f"{what} needs the {needed.value!r} permission, which role "
        f"{principal.role.value!r}{' (scoped, read-only)' if principal.scope else ''} "
        "does not grant",
        {"permission": needed.value, "role": principal.role.value},
    )
