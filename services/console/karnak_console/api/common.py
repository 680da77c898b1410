"""What the routers share: the console's parts from the request, JSON bodies, schemas for OpenAPI."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from pydantic import TypeAdapter

from karnak_console.context import Console
from karnak_console.problems import ApiProblem, FieldProblem
from karnak_console.roles import Permission
from karnak_console.security import Caller, Guard

# Schemas of the configuration models, added to the OpenAPI document's components by `create_app`.
BODY_SCHEMAS: dict[str, dict[str, Any]] = {}


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


ConsoleDep = Annotated[Console, Depends(console)]
Reader = Annotated[Caller, Depends(Guard(Permission.READ_CONFIG))]
Writer = Annotated[Caller, Depends(Guard(Permission.WRITE_CONFIG))]
Operator = Annotated[Caller, Depends(Guard(Permission.OPERATE))]
PseudonymKeeper = Annotated[Caller, Depends(Guard(Permission.PSEUDONYMS))]
StatusReader = Annotated[Caller, Depends(Guard(Permission.STATUS))]
Auditor = Annotated[Caller, Depends(Guard(Permission.AUDIT))]
AccountKeeper = Annotated[Caller, Depends(Guard(Permission.ACCOUNTS))]


def based_on(if_match: Annotated[str | None, Header()] = None) -> int | None:
    """The revision a write was based on (`If-Match: 12` or `"12"`), when the client names one."""
    if if_match is None:
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise ApiProblem(400, "If-Match must be a revision number", [FieldProblem(field="If-Match", message=text)])
    return int(text)


BasedOn = Annotated[int | None, Depends(based_on)]


def register_schema(name: str, adapter: TypeAdapter[Any]) -> dict[str, Any]:
    """The `requestBody` of an operation whose JSON body is a configuration model (validated by the store)."""
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
    for key, value in schema.pop("$defs", {}).items():
        BODY_SCHEMAS.setdefault(key, value)
    BODY_SCHEMAS[name] = schema
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    }


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object."""
    try:
        body = json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiProblem(400, f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiProblem(422, "the body must be a JSON object", [FieldProblem(field="", message="must be an object")])
    return body
