"""The whole routing document (`If-Match` on the revision it was read at) and the revisions' history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, TypeAdapter

from karnak_console.api.common import ConsoleDep, Reader, Writer, json_object, register_schema
from karnak_console.editor import WriteResult, change_view
from karnak_console.problems import ApiProblem, FieldProblem
from karnak_shared.config import RoutingConfig
from karnak_shared.revisions import RevisionNotFound

router = APIRouter(prefix="/api/v1")

DOCUMENT_BODY = register_schema("RoutingConfiguration", TypeAdapter(RoutingConfig))


class RevisionSummary(BaseModel):
    number: int
    created_at: str
    author: str
    origin: str
    comment: str
    checksum: str


class RevisionDetail(RevisionSummary):
    document: dict[str, Any]


class RevisionDiff(BaseModel):
    base: int
    target: int
    changes: list[dict[str, Any]]


@router.get("/configuration", tags=["configuration"], summary="The whole routing configuration (secrets masked)")
def get_configuration(caller: Reader, console: ConsoleDep) -> JSONResponse:
    number, document = console.editor.masked()
    return JSONResponse({"revision": number, "document": document}, headers={"ETag": f'"{number}"'})


@router.put(
    "/configuration",
    tags=["configuration"],
    openapi_extra=DOCUMENT_BODY,
    summary="Replace the routing configuration; If-Match names the revision it was based on",
)
async def put_configuration(
    request: Request,
    caller: Writer,
    console: ConsoleDep,
    if_match: Annotated[str | None, Header(description="the revision the document was read at")] = None,
    dry_run: Annotated[bool, Query(description="return the diff, store nothing")] = False,
    comment: Annotated[str, Query(max_length=500)] = "",
) -> WriteResult:
    number, current = console.editor.document()
    if if_match is None:
        raise ApiProblem(
            428,
            f"send If-Match with the revision the document was based on (the current one is {number})",
            [FieldProblem(field="If-Match", message="is required")],
            revision=number,
        )
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise ApiProblem(400, "If-Match must be a revision number", [FieldProblem(field="If-Match", message=text)])
    if int(text) != number:
        raise ApiProblem(
            412,
            f"the document was based on revision {text} but the configuration is at revision {number}: "
            "read it again, re-apply your change and retry",
            revision=number,
        )
    document = await json_object(request)
    return console.editor.store_document(
        caller,
        action="replace",
        object="configuration",
        document=document,
        previous=current,
        based_on=number,
        comment=comment,
        dry_run=dry_run,
    )


def _summary(revision: Any) -> dict[str, Any]:
    return {
        "number": revision.number,
        "created_at": revision.created_at.isoformat(),
        "author": revision.author,
        "origin": revision.origin,
        "comment": revision.comment,
        "checksum": revision.checksum,
    }


def _revision(console: Any, number: int) -> Any:
    try:
        return console.store.get(number)
    except RevisionNotFound as exc:
        raise ApiProblem(404, str(exc)) from None


@router.get("/revisions", tags=["revisions"], summary="The revisions, newest first")
def list_revisions(
    caller: Reader, console: ConsoleDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[RevisionSummary]:
    return [RevisionSummary(**_summary(r)) for r in console.store.history(limit)]


@router.get("/revisions/{number}", tags=["revisions"], summary="One revision with its document (secrets masked)")
def get_revision(number: int, caller: Reader, console: ConsoleDep) -> RevisionDetail:
    revision = _revision(console, number)
    _, document = console.editor.masked(revision)
    return RevisionDetail(**_summary(revision), document=document)


@router.get("/revisions/{number}/diff", tags=["revisions"], summary="What changed from revision ?base= to this one")
def diff_revision(
    number: int, caller: Reader, console: ConsoleDep, base: Annotated[int | None, Query(ge=0)] = None
) -> RevisionDiff:
    target = _revision(console, number)
    chosen = number - 1 if base is None else base
    if chosen == 0:
        from karnak_shared.revisions import diff_documents

        return RevisionDiff(
            base=0, target=number, changes=[change_view(c) for c in diff_documents(None, target.document)]
        )
    _revision(console, chosen)
    return RevisionDiff(
        base=chosen, target=number, changes=[change_view(c) for c in console.store.diff(chosen, number)]
    )


@router.post("/revisions/{number}/rollback", tags=["revisions"], summary="Store a new revision equal to this one")
def rollback_revision(
    number: int,
    caller: Writer,
    console: ConsoleDep,
    dry_run: Annotated[bool, Query()] = False,
) -> WriteResult:
    target = _revision(console, number)
    current, document = console.editor.document()
    return console.editor.store_document(
        caller,
        action="rollback",
        object=f"revisions/{number}",
        document=dict(target.document),
        previous=document,
        based_on=current,
        comment=f"rollback to revision {number}",
        dry_run=dry_run,
        origin="rollback",
    )
