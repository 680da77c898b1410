"""Errors as the API answers them: `{"detail", "errors": [{field, message}], "revision"}`.

Field paths and wording are the configuration's own (`forward_nodes[0].destinations[1].port: must be
between 1 and 65535`), whether a problem comes from the revision store's validation, a profile, or the
request itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from karnak_shared.config import format_path
from karnak_shared.errors import ConfigError


class FieldProblem(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """The body of every error response."""

    detail: str
    errors: list[FieldProblem] = []
    # The current revision, when the request lost a race with another change (409/412).
    revision: int | None = None


class ApiProblem(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        errors: Sequence[FieldProblem] = (),
        revision: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)
        self.revision = revision
        self.headers = headers


_LINE = re.compile(r" \(line \d+\)$")
# A field path (`forward_nodes[0].port`, `(top level)`), maybe followed by a quoted name (`profileElements[1] 'x'`).
_FIELD = re.compile(r"^(?:\(top level\)|[A-Za-z_][A-Za-z0-9_]*(?:\[\d+\]|\.[A-Za-z_][A-Za-z0-9_]*)*)(?: '[^']*')?$")


def field_problems(problems: Sequence[str]) -> list[FieldProblem]:
    """`path: message` lines (ConfigError's) as `{field, message}`."""
    out = []
    for problem in problems:
        field, sep, message = problem.partition(": ")
        if not sep or not _FIELD.match(field.strip()):
            out.append(FieldProblem(field="", message=problem))
        else:
            out.append(FieldProblem(field=field, message=_LINE.sub("", message)))
    return out


def invalid(exc: ConfigError, detail: str = "the configuration would be invalid") -> ApiProblem:
    return ApiProblem(422, detail, field_problems(exc.problems))


def _location(loc: Sequence[Any]) -> str:
    parts = tuple(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else tuple(loc)
    where = format_path(tuple(p for p in parts if isinstance(p, str | int)))
    return where or (str(loc[0]) if loc else "")


def _message(error: Any) -> str:
    message = str(error.get("msg", ""))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if error.get("type") == "extra_forbidden":
        return "unknown field (check its spelling)"
    if error.get("type") == "missing":
        return "is required"
    return message[:1].lower() + message[1:]


async def problem_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblem)
    body = Problem(detail=exc.detail, errors=exc.errors, revision=exc.revision)
    return JSONResponse(body.model_dump(), status_code=exc.status, headers=exc.headers)


def validation_problems(errors: Sequence[Any]) -> list[FieldProblem]:
    """pydantic's errors (of a request body, or of a model the pages validate) as `{field, message}`."""
    return [FieldProblem(field=_location(e.get("loc", ())), message=_message(e)) for e in errors]


async def validation_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    body = Problem(detail="the request is invalid", errors=validation_problems(exc.errors()))
    return JSONResponse(body.model_dump(), status_code=422)


async def http_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    body = Problem(detail=str(exc.detail))
    return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=getattr(exc, "headers", None))
