"""Forward nodes with their sources and destinations (DESIGN.md section 15), each write one revision.

Bodies read as the configuration file does (the same field names); ids are the natural keys: a forward
node's AE title, a source's AE title, a destination's id.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, TypeAdapter

from karnak_console.api.common import BasedOn, ConsoleDep, Reader, Writer, json_object, register_schema
from karnak_console.context import Console
from karnak_console.editor import WriteResult
from karnak_console.problems import ApiProblem, FieldProblem
from karnak_console.security import Caller
from karnak_shared.config import Destination, ForwardNode, Source, has_reference
from karnak_shared.headers import AUTHORIZATION, HeaderError, basic_authorization, bearer_authorization, karnak_form
from karnak_shared.headers import parse_headers as parse_stow_headers
from karnak_shared.revisions import Document, is_encrypted

router = APIRouter(prefix="/api/v1", tags=["forward nodes"])

NODE_BODY = register_schema("ForwardNode", TypeAdapter(ForwardNode))
SOURCE_BODY = register_schema("Source", TypeAdapter(Source))
DESTINATION_BODY = register_schema("Destination", TypeAdapter(Destination))

Force = Annotated[bool, Query(description="delete even though messages are queued for it")]
DryRun = Annotated[bool, Query(description="validate and return the diff without storing a revision")]

# Karnak's wording (AuthHeadersGenerationDialog), kept so people moving over read what they know.
AUTHORIZATION_EXISTS = (
    "Cannot generate Authorization Header: The Headers already contain an Authorization tag. "
    "Please remove it if you want to generate it."
)


class Listing(BaseModel):
    revision: int
    items: list[dict[str, Any]]


class Item(BaseModel):
    revision: int
    item: dict[str, Any]


# --- finding things in a document ----------------------------------------------------------------


def _nodes(document: Document) -> list[dict[str, Any]]:
    nodes = document.setdefault("forward_nodes", [])
    assert isinstance(nodes, list)
    return nodes


def node_index(document: Document, ae_title: str) -> int:
    for index, node in enumerate(_nodes(document)):
        if isinstance(node, dict) and node.get("ae_title") == ae_title:
            return index
    raise ApiProblem(404, f"no forward node with AE title {ae_title!r}")


def _children(node: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = node.setdefault(key, [])
    assert isinstance(items, list)
    return items


def child_index(node: dict[str, Any], key: str, field: str, value: str, what: str) -> int:
    for index, item in enumerate(_children(node, key)):
        if isinstance(item, dict) and item.get(field) == value:
            return index
    raise ApiProblem(404, f"no {what} {value!r} on forward node {node.get('ae_title')!r}")


def destination_location(document: Document, destination_id: str) -> tuple[str, int] | None:
    for node in _nodes(document):
        for index, dest in enumerate(_children(node, "destinations")):
            if dest.get("id") == destination_id:
                return str(node.get("ae_title")), index
    return None


def _queues_of(console: Console, destinations: list[dict[str, Any]]) -> dict[str, str]:
    prefix = console.settings.broker.prefix
    return {f"{prefix}.send.{d.get('type')}.{d.get('id')}": str(d.get("id")) for d in destinations}


def refuse_if_queued(console: Console, destinations: list[dict[str, Any]], force: bool, what: str) -> None:
    """409 naming how many messages wait for these destinations, unless `force`."""
    if force or not destinations:
        return
    counts = console.queued(list(_queues_of(console, destinations)))
    waiting = {queue: n for queue, n in counts.items() if n}
    if waiting:
        total = sum(waiting.values())
        where = ", ".join(f"{n} in {queue}" for queue, n in waiting.items())
        raise ApiProblem(
            409,
            f"{total} message(s) are queued for {what} ({where}): deleting it stops their delivery "
            "(the queue and its messages are kept); send force=true to delete it anyway",
        )


# --- forward nodes --------------------------------------------------------------------------------


@router.get("/forward-nodes", summary="List the forward nodes")
def list_nodes(caller: Reader, console: ConsoleDep) -> Listing:
    number, document = console.editor.masked()
    return Listing(revision=number, items=_nodes(document))


@router.post("/forward-nodes", status_code=201, openapi_extra=NODE_BODY, summary="Create a forward node")
async def create_node(request: Request, caller: Writer, console: ConsoleDep, based_on: BasedOn) -> WriteResult:
    return store_new_node(console, caller, await json_object(request), based_on)


def store_new_node(console: Console, caller: Caller, body: dict[str, Any], based_on: int | None) -> WriteResult:
    """Add a forward node (the API's POST and the Gateway page's "New forward node")."""
    ae_title = str(body.get("ae_title", "")).strip()

    def mutate(document: Document) -> None:
        if any(n.get("ae_title") == ae_title for n in _nodes(document)):
            raise ApiProblem(
                409,
                f"a forward node with AE title {ae_title!r} already exists",
                [FieldProblem(field="ae_title", message=f"'{ae_title}' is already the AE title of a forward node")],
            )
        _nodes(document).append(body)

    return console.editor.change(
        caller, action="create", object=f"forward-nodes/{ae_title}", mutate=mutate, based_on=based_on
    )


@router.get("/forward-nodes/{ae_title}", summary="Get a forward node with its sources and destinations")
def get_node(ae_title: str, caller: Reader, console: ConsoleDep) -> Item:
    number, document = console.editor.masked()
    return Item(revision=number, item=_nodes(document)[node_index(document, ae_title)])


@router.put(
    "/forward-nodes/{ae_title}",
    openapi_extra=NODE_BODY,
    summary="Replace a forward node (sources and destinations kept when the body leaves them out)",
)
async def replace_node(
    ae_title: str, request: Request, caller: Writer, console: ConsoleDep, based_on: BasedOn
) -> WriteResult:
    return store_node(console, caller, ae_title, await json_object(request), based_on)


def store_node(
    console: Console, caller: Caller, ae_title: str, body: dict[str, Any], based_on: int | None
) -> WriteResult:
    """Replace a forward node, keeping its sources and destinations when `body` leaves them out."""

    def mutate(document: Document) -> None:
        index = node_index(document, ae_title)
        current = _nodes(document)[index]
        for key in ("sources", "destinations"):
            if key not in body and key in current:
                body[key] = current[key]
        renamed = body.get("ae_title")
        if renamed != ae_title and any(n.get("ae_title") == renamed for n in _nodes(document)):
            raise ApiProblem(
                409,
                f"a forward node with AE title {renamed!r} already exists",
                [FieldProblem(field="ae_title", message=f"'{renamed}' is already the AE title of a forward node")],
            )
        _nodes(document)[index] = body

    return console.editor.change(
        caller, action="update", object=f"forward-nodes/{ae_title}", mutate=mutate, based_on=based_on
    )


@router.delete("/forward-nodes/{ae_title}", summary="Delete a forward node and its destinations")
def delete_node(
    ae_title: str, caller: Writer, console: ConsoleDep, based_on: BasedOn, force: Force = False
) -> WriteResult:
    def mutate(document: Document) -> None:
        index = node_index(document, ae_title)
        node = _nodes(document)[index]
        refuse_if_queued(console, _children(node, "destinations"), force, f"forward node {ae_title}")
        del _nodes(document)[index]

    return console.editor.change(
        caller, action="delete", object=f"forward-nodes/{ae_title}", mutate=mutate, based_on=based_on
    )


# --- sources --------------------------------------------------------------------------------------


@router.get("/forward-nodes/{ae_title}/sources", summary="List a forward node's sources")
def list_sources(ae_title: str, caller: Reader, console: ConsoleDep) -> Listing:
    number, document = console.editor.masked()
    node = _nodes(document)[node_index(document, ae_title)]
    return Listing(revision=number, items=_children(node, "sources"))


@router.post("/forward-nodes/{ae_title}/sources", status_code=201, openapi_extra=SOURCE_BODY, summary="Add a source")
async def add_source(
    ae_title: str, request: Request, caller: Writer, console: ConsoleDep, based_on: BasedOn
) -> WriteResult:
    return store_new_source(console, caller, ae_title, await json_object(request), based_on)


def store_new_source(
    console: Console, caller: Caller, ae_title: str, body: dict[str, Any], based_on: int | None
) -> WriteResult:
    source = str(body.get("ae_title", "")).strip()

    def mutate(document: Document) -> None:
        node = _nodes(document)[node_index(document, ae_title)]
        if any(s.get("ae_title") == source for s in _children(node, "sources")):
            raise ApiProblem(
                409,
                f"forward node {ae_title!r} already has a source {source!r}",
                [FieldProblem(field="ae_title", message=f"'{source}' is already a source of this forward node")],
            )
        _children(node, "sources").append(body)

    return console.editor.change(
        caller, action="create", object=f"forward-nodes/{ae_title}/sources/{source}", mutate=mutate, based_on=based_on
    )


@router.get("/forward-nodes/{ae_title}/sources/{source}", summary="Get a source")
def get_source(ae_title: str, source: str, caller: Reader, console: ConsoleDep) -> Item:
    number, document = console.editor.masked()
    node = _nodes(document)[node_index(document, ae_title)]
    return Item(
        revision=number, item=_children(node, "sources")[child_index(node, "sources", "ae_title", source, "source")]
    )


@router.put("/forward-nodes/{ae_title}/sources/{source}", openapi_extra=SOURCE_BODY, summary="Replace a source")
async def replace_source(
    ae_title: str, source: str, request: Request, caller: Writer, console: ConsoleDep, based_on: BasedOn
) -> WriteResult:
    return store_source(console, caller, ae_title, source, await json_object(request), based_on)


def store_source(
    console: Console, caller: Caller, ae_title: str, source: str, body: dict[str, Any], based_on: int | None
) -> WriteResult:
    def mutate(document: Document) -> None:
        node = _nodes(document)[node_index(document, ae_title)]
        _children(node, "sources")[child_index(node, "sources", "ae_title", source, "source")] = body

    return console.editor.change(
        caller, action="update", object=f"forward-nodes/{ae_title}/sources/{source}", mutate=mutate, based_on=based_on
    )


@router.delete("/forward-nodes/{ae_title}/sources/{source}", summary="Remove a source")
def delete_source(ae_title: str, source: str, caller: Writer, console: ConsoleDep, based_on: BasedOn) -> WriteResult:
    def mutate(document: Document) -> None:
        node = _nodes(document)[node_index(document, ae_title)]
        del _children(node, "sources")[child_index(node, "sources", "ae_title", source, "source")]

    return console.editor.change(
        caller, action="delete", object=f"forward-nodes/{ae_title}/sources/{source}", mutate=mutate, based_on=based_on
    )


# --- destinations ---------------------------------------------------------------------------------


@router.get("/forward-nodes/{ae_title}/destinations", summary="List a forward node's destinations")
def list_destinations(ae_title: str, caller: Reader, console: ConsoleDep) -> Listing:
    number, document = console.editor.masked()
    node = _nodes(document)[node_index(document, ae_title)]
    return Listing(revision=number, items=_children(node, "destinations"))


@router.post(
    "/forward-nodes/{ae_title}/destinations",
    status_code=201,
    openapi_extra=DESTINATION_BODY,
    summary="Add a destination (dicom or stow)",
)
async def add_destination(
    ae_title: str, request: Request, caller: Writer, console: ConsoleDep, based_on: BasedOn
) -> WriteResult:
    return store_new_destination(console, caller, ae_title, await json_object(request), based_on)


def store_new_destination(
    console: Console, caller: Caller, ae_title: str, body: dict[str, Any], based_on: int | None
) -> WriteResult:
    destination = str(body.get("id", ""))

    def mutate(document: Document) -> None:
        node = _nodes(document)[node_index(document, ae_title)]
        found = destination_location(document, destination)
        if found is not None:
            raise ApiProblem(
                409,
                f"destination id {destination!r} is already used on forward node {found[0]!r} (ids name queues)",
                [FieldProblem(field="id", message=f"'{destination}' is already the id of a destination")],
            )
        _children(node, "destinations").append(body)

    return console.editor.change(
        caller,
        action="create",
        object=f"forward-nodes/{ae_title}/destinations/{destination}",
        mutate=mutate,
        based_on=based_on,
    )


@router.get("/forward-nodes/{ae_title}/destinations/{destination}", summary="Get a destination")
def get_destination(ae_title: str, destination: str, caller: Reader, console: ConsoleDep) -> Item:
    number, document = console.editor.masked()
    node = _nodes(document)[node_index(document, ae_title)]
    index = child_index(node, "destinations", "id", destination, "destination")
    return Item(revision=number, item=_children(node, "destinations")[index])


@router.put(
    "/forward-nodes/{ae_title}/destinations/{destination}",
    openapi_extra=DESTINATION_BODY,
    summary="Replace a destination (masked secrets sent back keep their stored value)",
)
async def replace_destination(
    ae_title: str, destination: str, request: Request, caller: Writer, console: ConsoleDep, based_on: BasedOn
) -> WriteResult:
    return store_destination(console, caller, ae_title, destination, await json_object(request), based_on)


def store_destination(
    console: Console, caller: Caller, ae_title: str, destination: str, body: dict[str, Any], based_on: int | None
) -> WriteResult:
    def mutate(document: Document) -> None:
        node = _nodes(document)[node_index(document, ae_title)]
        index = child_index(node, "destinations", "id", destination, "destination")
        _children(node, "destinations")[index] = body

    return console.editor.change(
        caller,
        action="update",
        object=f"forward-nodes/{ae_title}/destinations/{destination}",
        mutate=mutate,
        based_on=based_on,
    )


@router.delete("/forward-nodes/{ae_title}/destinations/{destination}", summary="Delete a destination")
def delete_destination(
    ae_title: str, destination: str, caller: Writer, console: ConsoleDep, based_on: BasedOn, force: Force = False
) -> WriteResult:
    def mutate(document: Document) -> None:
        node = _nodes(document)[node_index(document, ae_title)]
        index = child_index(node, "destinations", "id", destination, "destination")
        refuse_if_queued(console, [_children(node, "destinations")[index]], force, f"destination {destination}")
        del _children(node, "destinations")[index]

    return console.editor.change(
        caller,
        action="delete",
        object=f"forward-nodes/{ae_title}/destinations/{destination}",
        mutate=mutate,
        based_on=based_on,
    )


class AuthorizationRequest(BaseModel):
    """Karnak's "Generate Authorization Header": Basic (username and password) or Bearer (a token)."""

    model_config = {"extra": "forbid"}

    type: Literal["basic", "bearer"]
    username: Annotated[str | None, Field(max_length=256)] = None
    password: Annotated[str | None, Field(max_length=4096)] = None
    token: Annotated[str | None, Field(max_length=8192)] = None


def authorization_value(body: AuthorizationRequest) -> str:
    """The Authorization header's value: Basic base64(username:password), or Bearer token."""
    try:
        if body.type == "basic":
            if not body.username or body.password is None:
                raise ApiProblem(
                    422,
                    "Basic authorization needs a username and a password",
                    [FieldProblem(field="username", message="This field is required")],
                )
            return basic_authorization(body.username, body.password)
        if not body.token:
            raise ApiProblem(
                422,
                "Bearer authorization needs a token",
                [FieldProblem(field="token", message="This field is required")],
            )
        return bearer_authorization(body.token)
    except HeaderError as exc:
        raise ApiProblem(422, str(exc)) from None


def with_authorization(headers: str | dict[str, str], value: str) -> str | dict[str, str]:
    """The headers with an Authorization header appended; 409 (Karnak's words) when they hold one already."""
    try:
        current = parse_stow_headers(headers)
    except HeaderError as exc:
        raise ApiProblem(422, str(exc), [FieldProblem(field="headers", message=str(exc))]) from None
    if any(name.lower() == AUTHORIZATION.lower() for name in current):
        raise ApiProblem(409, AUTHORIZATION_EXISTS)
    if isinstance(headers, dict):
        return {**headers, AUTHORIZATION: value}
    text = headers.rstrip()
    return (text + "\n" if text else "") + karnak_form({AUTHORIZATION: value})


@router.post(
    "/forward-nodes/{ae_title}/destinations/{destination}/headers:authorization",
    summary="Append an Authorization header to a STOW destination (refused when it has one)",
)
def generate_authorization(
    ae_title: str,
    destination: str,
    body: AuthorizationRequest,
    caller: Writer,
    console: ConsoleDep,
    based_on: BasedOn,
) -> WriteResult:
    value = authorization_value(body)
    latest = console.editor.latest()
    if latest is None:
        raise ApiProblem(404, f"no forward node with AE title {ae_title!r}")
    routing = console.editor.validated(latest)
    node = routing.forward_node(ae_title)
    dest = next((d for d in node.destinations if d.id == destination), None) if node is not None else None
    if dest is None:
        raise ApiProblem(404, f"no destination {destination!r} on forward node {ae_title!r}")
    if dest.type != "stow":
        raise ApiProblem(
            422, f"destination {destination!r} is a {dest.type} destination: only STOW destinations send HTTP headers"
        )
    _, raw = console.editor.document()
    written = raw["forward_nodes"][node_index(raw, ae_title)]["destinations"]
    raw_headers = next((d.get("headers") for d in written if d.get("id") == destination), None)
    if isinstance(raw_headers, str) and has_reference(raw_headers) and not is_encrypted(raw_headers):
        raise ApiProblem(409, f"the headers of {destination!r} come from {raw_headers}: change that secret instead")
    headers = with_authorization(dest.headers, value)

    def mutate(document: Document) -> None:
        node_doc = _nodes(document)[node_index(document, ae_title)]
        index = child_index(node_doc, "destinations", "id", destination, "destination")
        _children(node_doc, "destinations")[index]["headers"] = headers

    return console.editor.change(
        caller,
        action="generate-authorization",
        object=f"forward-nodes/{ae_title}/destinations/{destination}",
        mutate=mutate,
        based_on=based_on if based_on is not None else latest.number,
    )
