"""Accounts and API tokens for admins (the `karnak users` and `karnak tokens` commands do the same)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from karnak_console.accounts import AccountError
from karnak_console.api.common import AccountKeeper, ConsoleDep
from karnak_console.problems import ApiProblem
from karnak_console.roles import Role

router = APIRouter(prefix="/api/v1", tags=["accounts"])


class TokenView(BaseModel):
    name: str
    role: Role
    created_at: dt.datetime
    created_by: str
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=128)]
    role: Role


class CreatedToken(TokenView):
    # Shown this once: only its hash is stored.
    token: str


class UserView(BaseModel):
    name: str
    role: Role
    source: str
    created_at: dt.datetime
    last_login_at: dt.datetime | None


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=128)]
    role: Role
    password: Annotated[str, Field(min_length=8, max_length=1024)]


@router.get("/tokens", summary="The API tokens (never their value)")
def list_tokens(caller: AccountKeeper, console: ConsoleDep) -> list[TokenView]:
    return [TokenView(**t.__dict__) for t in console.accounts.tokens()]


@router.post("/tokens", status_code=201, summary="Create an API token; its value is returned this once")
def create_token(body: NewToken, caller: AccountKeeper, console: ConsoleDep) -> CreatedToken:
    try:
        info, token = console.accounts.create_token(body.name, body.role, caller.actor)
    except AccountError as exc:
        raise ApiProblem(409, str(exc)) from None
    console.audit.record(
        actor=caller.actor,
        origin=caller.origin,
        client=caller.client,
        action="create",
        object=f"tokens/{body.name}",
        diff=[{"path": f"tokens/{body.name}", "kind": "added", "before": None, "after": {"role": body.role}}],
    )
    return CreatedToken(**{k: v for k, v in info.__dict__.items() if k != "id"}, token=token)


@router.delete("/tokens/{name}", status_code=204, summary="Revoke an API token")
def revoke_token(name: str, caller: AccountKeeper, console: ConsoleDep) -> Response:
    try:
        console.accounts.revoke_token(name)
    except AccountError as exc:
        raise ApiProblem(404, str(exc)) from None
    console.audit.record(
        actor=caller.actor, origin=caller.origin, client=caller.client, action="revoke", object=f"tokens/{name}"
    )
    return Response(status_code=204)


@router.get("/users", summary="The console's accounts")
def list_users(caller: AccountKeeper, console: ConsoleDep) -> list[UserView]:
    return [UserView(**u.__dict__) for u in console.accounts.users()]


@router.post("/users", status_code=201, summary="Add a local account")
def add_user(body: NewUser, caller: AccountKeeper, console: ConsoleDep) -> UserView:
    try:
        info = console.accounts.add_user(body.name, body.role, body.password)
    except AccountError as exc:
        raise ApiProblem(409, str(exc)) from None
    console.audit.record(
        actor=caller.actor,
        origin=caller.origin,
        client=caller.client,
        action="create",
        object=f"users/{body.name}",
        diff=[{"path": f"users/{body.name}", "kind": "added", "before": None, "after": {"role": body.role}}],
    )
    return UserView(**info.__dict__)


@router.delete("/users/{name}", status_code=204, summary="Remove an account")
def remove_user(name: str, caller: AccountKeeper, console: ConsoleDep) -> Response:
    if name == caller.principal.name and caller.principal.kind == "user":
        raise ApiProblem(409, "you cannot remove your own account")
    try:
        console.accounts.remove_user(name)
    except AccountError as exc:
        raise ApiProblem(404, str(exc)) from None
    console.audit.record(
        actor=caller.actor, origin=caller.origin, client=caller.client, action="delete", object=f"users/{name}"
    )
    return Response(status_code=204)
