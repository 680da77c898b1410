"""Roles and what each may do (DESIGN.md section 15).

- admin: everything (the routing configuration, accounts, audit).
- operator: dead letters, tools, pseudonyms, the audit trail, and reading the configuration.
- viewer: reading the configuration (secrets masked) and the services' status; no patient identifiers.

Every route names one `Permission`; the walk over the OpenAPI document in the tests checks each route
against each role, so a new route cannot forget its permission.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args

Role = Literal["admin", "operator", "viewer"]
ROLES: tuple[Role, ...] = get_args(Role)


class Permission(StrEnum):
    READ_CONFIG = "read-config"
    WRITE_CONFIG = "write-config"
    STATUS = "status"
    OPERATE = "operate"  # dead letters and tools
    PSEUDONYMS = "pseudonyms"  # re-identifying data: patient IDs
    AUDIT = "audit"
    ACCOUNTS = "accounts"


GRANTS: dict[Role, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "operator": frozenset(
        {Permission.READ_CONFIG, Permission.STATUS, Permission.OPERATE, Permission.PSEUDONYMS, Permission.AUDIT}
    ),
    "viewer": frozenset({Permission.READ_CONFIG, Permission.STATUS}),
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in GRANTS[role]


def highest_role(names: list[str]) -> Role | None:
    """The most powerful of the known role names given (an OpenID provider's claim), if any."""
    for role in ROLES:
        if role in names:
            return role
    return None
