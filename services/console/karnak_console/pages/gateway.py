"""The Gateway pages (Karnak's `/forwardnode`): forward nodes, their sources, their destinations.

Every change goes through the API's own functions (`api.routing.store_*`, `delete_*`), so the page
validates with the configuration's models and stores one revision, audited as `console`. A form is read
into the body the API takes (the configuration file's field names), and the API's field errors are shown
next to the fields they name. Defaults shown on a new destination are the models' own defaults.
"""

from __future__ import annotations

import functools
import json
import secrets
import socket
from typing import Annotated, Any, get_args
from urllib.parse import quote

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response

from karnak_console.api import routing
from karnak_console.api.common import ConsoleDep
from karnak_console.api.routing import AuthorizationRequest
from karnak_console.context import Console
from karnak_console.pages import (
    FormErrors,
    FormReader,
    PageOperator,
    PageReader,
    PageWriter,
    page_router,
    render,
    see_other,
)
from karnak_console.problems import ApiProblem
from karnak_console.security import Caller
from karnak_console.tools import echo, kheops_token, stow_probe
from karnak_dicom.syntaxes import ENCODABLE, KEEP
from karnak_shared.config import DicomDestination, Notifications, Pseudonym, StowDestination
from karnak_shared.headers import HeaderError, karnak_form, parse_headers

router = page_router()

DESTINATION_TYPES = ("dicom", "stow")
# Karnak's "Pseudonym type" choices, with the hash of this gateway first (its default).
PSEUDONYM_TYPES = [
    ("hash", "Pseudonym computed from the patient ID with the project's secret"),
    ("cache", "Pseudonym is already stored in KARNAK"),
    ("tag", "Pseudonym is in a DICOM tag"),
    ("api", "Pseudonym from external API"),
]
TRANSFER_SYNTAXES = [(KEEP, "Keep original transfer syntax"), *((s.uid, f"{s.name} ({s.uid})") for s in ENCODABLE)]
SUBJECT_VALUES: tuple[str, ...] = get_args(get_args(Notifications.model_fields["subject_values"].annotation)[0])


@functools.cache
def storage_sop_classes() -> tuple[tuple[str, str], ...]:
    """(UID, name) of every storage SOP class pydicom knows, by name: the "Authorized SOPs" choices."""
    from karnak_dicom._internals import uid_dictionary

    found = [
        (uid, entry[0])
        for uid, entry in uid_dictionary().items()
        if entry[1] == "SOP Class" and entry[0].endswith("Storage") and not entry[3]
    ]
    return tuple(sorted(found, key=lambda item: item[1]))


def _plain(value: Any) -> Any:
    """A model default as the document holds it (a Condition is its text)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def model_defaults(model: Any) -> dict[str, Any]:
    """The defaults of a model's optional fields (what a new form shows, and what the model would fill in)."""
    return {
        name: _plain(info.get_default(call_default_factory=True))
        for name, info in model.model_fields.items()
        if not info.is_required()
    }


def new_destination(kind: str) -> dict[str, Any]:
    model = DicomDestination if kind == "dicom" else StowDestination
    return {"type": kind, "id": "", **model_defaults(model)}


# --- reading the forms ----------------------------------------------------------------------------


def destination_body(form: FormReader, kind: str) -> dict[str, Any]:
    """The destination form as the API's body: absent or blank fields are left out (the model's default
    applies, or the model says it is required)."""
    body: dict[str, Any] = {"type": kind}

    def put(name: str, value: Any) -> None:
        if value is not None:
            body[name] = value

    put("id", form.text("id"))
    put("description", form.text("description"))
    put("condition", form.text("condition"))
    body["enabled"] = form.checked("enabled")
    body["transfer_syntax"] = form.text("transfer_syntax") or KEEP
    body["transcode_only_uncompressed"] = form.checked("transcode_only_uncompressed")
    body["authorized_sop_classes"] = form.values("authorized_sop_classes") if form.checked("filter_sop_classes") else []
    if kind == "dicom":
        put("ae_title", form.text("ae_title"))
        put("hostname", form.text("hostname"))
        put("port", form.integer("port"))
        body["use_aetitle_destination"] = form.checked("use_aetitle_destination")
        if form.checked("use_tls"):
            tls: dict[str, Any] = {"verify_hostname": form.checked("tls.verify_hostname")}
            for name in ("ca_certificates", "certificate", "private_key"):
                value = form.text(f"tls.{name}")
                if value is not None:
                    tls[name] = value
            body["tls"] = tls
    else:
        put("url", form.text("url"))
        body["headers"] = headers_value(form.raw("headers"))
        if form.checked("kheops"):
            body["kheops_albums"] = kheops_albums(form)
    if form.checked("notify"):
        notifications: dict[str, Any] = {"emails": form.items("notifications.emails")}
        for name in ("error_prefix", "rejection_prefix", "subject_pattern"):
            value = form.text(f"notifications.{name}")
            if value is not None:
                notifications[name] = value
        notifications["subject_values"] = form.items("notifications.subject_values")
        interval = form.integer("notifications.interval")
        if interval is not None:
            notifications["interval"] = interval
        body["notifications"] = notifications
    if form.checked("deidentify"):
        body["deidentification"] = deidentification(form)
    if form.checked("morph_tags"):
        body["tag_morphing"] = {"project": form.text("tag_morphing.project") or ""}
    return body


def headers_value(text: str) -> str | dict[str, str]:
    """The Headers field as a mapping when it reads as Karnak's pairs: a masked value (`••••1234`) then
    keeps its stored header while the others change (the editor merges mappings header by header).
    Text that does not read is sent as typed, for the model to say what is wrong with it."""
    try:
        return parse_headers(text.strip())
    except HeaderError:
        return text.strip()


def deidentification(form: FormReader) -> dict[str, Any]:
    pseudonym: dict[str, Any] = {"type": form.text("deidentification.pseudonym.type") or "hash"}
    kind = pseudonym["type"]
    if kind == "tag":
        for name in ("tag", "delimiter"):
            value = form.text(f"deidentification.pseudonym.{name}")
            if value is not None:
                pseudonym[name] = value
        position = form.integer("deidentification.pseudonym.position")
        if position is not None:
            pseudonym["position"] = position
    if kind == "api":
        for name in (
            "url",
            "method",
            "body",
            "response_path",
            "auth_config",
            "token_url",
            "client_id",
            "client_secret",
            "scope",
        ):
            value = form.text(f"deidentification.pseudonym.{name}")
            if value is not None:
                pseudonym[name] = value
        timeout = form.number("deidentification.pseudonym.timeout")
        if timeout is not None:
            pseudonym["timeout"] = timeout
    body: dict[str, Any] = {"project": form.text("deidentification.project") or "", "pseudonym": pseudonym}
    issuer = form.text("deidentification.issuer_of_patient_id")
    if issuer is not None:
        body["issuer_of_patient_id"] = issuer
    return body


def kheops_albums(form: FormReader) -> list[dict[str, Any]]:
    """The album rows in order (each row's fields share one name; a row left wholly blank is dropped)."""
    columns = ("url_api", "token_destination", "token_source", "condition")
    values = {name: form.form.getlist(f"kheops.{name}") for name in columns}
    rows = []
    for index in range(max((len(v) for v in values.values()), default=0)):
        row = {name: str(values[name][index]).strip() if index < len(values[name]) else "" for name in columns}
        if any(row.values()):
            rows.append({name: value for name, value in row.items() if value or name != "condition"})
    return rows


def source_body(form: FormReader) -> dict[str, Any]:
    body: dict[str, Any] = {"ae_title": form.text("ae_title") or ""}
    if form.text("hostname") is not None:
        body["hostname"] = form.text("hostname")
    body["check_hostname"] = form.checked("check_hostname")
    if form.text("description") is not None:
        body["description"] = form.text("description")
    return body


def node_body(form: FormReader) -> dict[str, Any]:
    body: dict[str, Any] = {"ae_title": form.text("ae_title") or ""}
    if form.text("description") is not None:
        body["description"] = form.text("description")
    return body


def based_on(form: FormReader) -> int | None:
    revision = form.integer("revision")
    return revision if isinstance(revision, int) else None


# --- what the pages show --------------------------------------------------------------------------


def _nodes(document: dict[str, Any]) -> list[dict[str, Any]]:
    return list(document.get("forward_nodes") or [])


def _node(document: dict[str, Any], ae_title: str) -> tuple[int, dict[str, Any]]:
    index = routing.node_index(document, ae_title)
    return index, document["forward_nodes"][index]


def _project_names(document: dict[str, Any]) -> list[str]:
    return [str(p.get("name")) for p in document.get("projects") or [] if isinstance(p, dict)]


def _auth_codes(document: dict[str, Any]) -> list[str]:
    return [str(a.get("code")) for a in document.get("auth_configs") or [] if isinstance(a, dict)]


def gateway_address(console: Console) -> tuple[str, int]:
    """The host and port senders use to reach this gateway's DICOM port (not the browser's address)."""
    listener = console.settings.listener
    host = listener.host
    if host in ("0.0.0.0", "::", ""):
        host = own_hostname()
    return host, listener.port


@functools.cache
def own_hostname() -> str:
    """This machine's name for a listener bound to every address (asked once: it may take a DNS query)."""
    return socket.getfqdn()


def dicom_configuration(console: Console, node: dict[str, Any]) -> str:
    """Karnak's "Copy DICOM configuration" text, with the gateway's own host and port."""
    host, port = gateway_address(console)
    lines = [
        "DICOM Configuration",
        f"Description: {node.get('description') or ''}",
        f"AE Title: {node.get('ae_title')}",
        f"Host: {host}",
        f"Port: {port}",
    ]
    if console.settings.listener.tls is not None:
        lines.append("TLS: required")
    return "\n".join(lines)


def headers_text(headers: Any) -> str:
    """A destination's headers as the Headers field shows them (Karnak's <key>/<value> pairs)."""
    if isinstance(headers, dict):
        return karnak_form({str(k): str(v) for k, v in headers.items()}) if headers else ""
    return str(headers or "")


def queue_depths(console: Console, destinations: list[dict[str, Any]]) -> dict[str, int] | None:
    """Messages waiting per destination id; None when RabbitMQ cannot say."""
    prefix = console.settings.broker.prefix
    queues = {f"{prefix}.send.{d.get('type')}.{d.get('id')}": str(d.get("id")) for d in destinations}
    try:
        counts = console.queued(list(queues))
    except ApiProblem:
        return None
    return {queues[queue]: count for queue, count in counts.items()}


# --- forward nodes --------------------------------------------------------------------------------


def _nodes_page(
    request: Request, caller: Caller, console: Console, errors: FormErrors | None = None, typed: str = ""
) -> HTMLResponse:
    revision, document = console.editor.masked_view()
    nodes = sorted(_nodes(document), key=lambda n: str(n.get("ae_title")).lower())
    return render(
        request,
        "gateway/nodes.html",
        caller,
        status=422 if errors else 200,
        nodes=nodes,
        revision=revision,
        configurations={str(n.get("ae_title")): dicom_configuration(console, n) for n in nodes},
        errors=errors or FormErrors(),
        typed=typed,
    )


@router.get("/gateway")
def forward_nodes(request: Request, caller: PageReader, console: ConsoleDep) -> HTMLResponse:
    return _nodes_page(request, caller, console)


@router.post("/gateway")
async def create_forward_node(request: Request, caller: PageWriter, console: ConsoleDep) -> Response:
    form = FormReader(await request.form())
    body = node_body(form)
    try:
        routing.store_new_node(console, caller, body, based_on(form))
    except ApiProblem as problem:
        _, document = console.editor.document()
        errors = FormErrors.from_problem(problem, under=f"forward_nodes[{len(_nodes(document))}]")
        return _nodes_page(request, caller, console, errors, typed=body["ae_title"])
    return see_other(f"/gateway/{quote(body['ae_title'], safe='')}")


def _node_page(
    request: Request,
    caller: Caller,
    console: Console,
    ae_title: str,
    *,
    tab: str = "destinations",
    errors: FormErrors | None = None,
    typed: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    revision, document = console.editor.masked_view()
    _, node = _node(document, ae_title)
    destinations = list(node.get("destinations") or [])
    return render(
        request,
        "gateway/node.html",
        caller,
        status=status,
        revision=revision,
        node=node,
        typed=typed or node,
        tab=tab if tab in ("destinations", "sources") else "destinations",
        sources=list(node.get("sources") or []),
        destinations=destinations,
        configuration=dicom_configuration(console, node),
        errors=errors or FormErrors(),
    )


@router.get("/gateway/{ae_title}")
def forward_node(
    ae_title: str, request: Request, caller: PageReader, console: ConsoleDep, tab: str = "destinations"
) -> HTMLResponse:
    return _node_page(request, caller, console, ae_title, tab=tab)


@router.post("/gateway/{ae_title}")
async def save_forward_node(ae_title: str, request: Request, caller: PageWriter, console: ConsoleDep) -> Response:
    form = FormReader(await request.form())
    body = node_body(form)
    try:
        routing.store_node(console, caller, ae_title, body, based_on(form))
    except ApiProblem as problem:
        _, document = console.editor.document()
        index, _ = _node(document, ae_title)
        errors = FormErrors.from_problem(problem, under=f"forward_nodes[{index}]")
        return _node_page(request, caller, console, ae_title, errors=errors, typed=body, status=422)
    return see_other(f"/gateway/{quote(body['ae_title'], safe='')}")


@router.post("/gateway/{ae_title}/delete")
async def delete_forward_node(ae_title: str, request: Request, caller: PageWriter, console: ConsoleDep) -> Response:
    form = FormReader(await request.form())
    try:
        routing.delete_node(ae_title, caller, console, based_on(form), force=form.checked("force"))
    except ApiProblem as problem:
        errors = FormErrors(summary=problem.detail)
        return _node_page(request, caller, console, ae_title, errors=errors, status=problem.status)
    return see_other("/gateway")


# --- sources --------------------------------------------------------------------------------------


def _source_page(
    request: Request,
    caller: Caller,
    console: Console,
    ae_title: str,
    source: dict[str, Any] | None,
    *,
    stored: str | None,
    errors: FormErrors | None = None,
) -> HTMLResponse:
    revision, document = console.editor.masked_view()
    _, node = _node(document, ae_title)
    return render(
        request,
        "gateway/source.html",
        caller,
        status=422 if errors else 200,
        revision=revision,
        node=node,
        source=source if source is not None else {"check_hostname": True},
        stored=stored,
        errors=errors or FormErrors(),
    )


@router.get("/gateway/{ae_title}/new-source")
def new_source(ae_title: str, request: Request, caller: PageWriter, console: ConsoleDep) -> HTMLResponse:
    return _source_page(request, caller, console, ae_title, None, stored=None)


@router.get("/gateway/{ae_title}/sources/{source}")
def source_page(ae_title: str, source: str, request: Request, caller: PageReader, console: ConsoleDep) -> HTMLResponse:
    _, document = console.editor.masked_view()
    _, node = _node(document, ae_title)
    index = routing.child_index(node, "sources", "ae_title", source, "source")
    return _source_page(request, caller, console, ae_title, node["sources"][index], stored=source)


async def _save_source(
    request: Request, caller: Caller, console: Console, ae_title: str, stored: str | None
) -> Response:
    form = FormReader(await request.form())
    body = source_body(form)
    _, document = console.editor.document()
    node_at, node = _node(document, ae_title)
    sources = list(node.get("sources") or [])
    try:
        if stored is None:
            under = f"forward_nodes[{node_at}].sources[{len(sources)}]"
            routing.store_new_source(console, caller, ae_title, body, based_on(form))
        else:
            index = routing.child_index(node, "sources", "ae_title", stored, "source")
            under = f"forward_nodes[{node_at}].sources[{index}]"
            routing.store_source(console, caller, ae_title, stored, body, based_on(form))
    except ApiProblem as problem:
        errors = FormErrors.from_problem(problem, under=under)
        return _source_page(request, caller, console, ae_title, body, stored=stored, errors=errors)
    return see_other(f"/gateway/{quote(ae_title, safe='')}?tab=sources")


@router.post("/gateway/{ae_title}/sources")
async def create_source(ae_title: str, request: Request, caller: PageWriter, console: ConsoleDep) -> Response:
    return await _save_source(request, caller, console, ae_title, None)


@router.post("/gateway/{ae_title}/sources/{source}")
async def save_source(
    ae_title: str, source: str, request: Request, caller: PageWriter, console: ConsoleDep
) -> Response:
    return await _save_source(request, caller, console, ae_title, source)


@router.post("/gateway/{ae_title}/sources/{source}/delete")
async def delete_source(
    ae_title: str, source: str, request: Request, caller: PageWriter, console: ConsoleDep
) -> Response:
    form = FormReader(await request.form())
    routing.delete_source(ae_title, source, caller, console, based_on(form))
    return see_other(f"/gateway/{quote(ae_title, safe='')}?tab=sources")


# --- destinations ---------------------------------------------------------------------------------


def _destination_page(
    request: Request,
    caller: Caller,
    console: Console,
    ae_title: str,
    destination: dict[str, Any],
    *,
    stored: str | None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> HTMLResponse:
    revision, document = console.editor.masked_view()
    _, node = _node(document, ae_title)
    kind = str(destination.get("type"))
    sop_classes = list(storage_sop_classes())
    known = {uid for uid, _ in sop_classes}
    sop_classes += [(uid, uid) for uid in destination.get("authorized_sop_classes") or [] if uid not in known]
    return render(
        request,
        "gateway/destination.html",
        caller,
        status=status,
        revision=revision,
        node=node,
        kind=kind,
        dest=destination,
        stored=stored,
        headers=headers_text(destination.get("headers")),
        projects=_project_names(document),
        project_options=[("", "Choose a project"), *((name, name) for name in _project_names(document))],
        auth_options=[("", "None"), *((code, code) for code in _auth_codes(document))],
        pseudonym_types=PSEUDONYM_TYPES,
        pseudonym_defaults=model_defaults(Pseudonym),
        transfer_syntaxes=TRANSFER_SYNTAXES,
        subject_values=SUBJECT_VALUES,
        notification_defaults=model_defaults(Notifications),
        sop_classes=sop_classes,
        row_key=lambda: secrets.token_hex(4),
        errors=errors or FormErrors(),
    )


@router.get("/gateway/{ae_title}/new-destination/{kind}")
def new_destination_page(
    ae_title: str, kind: str, request: Request, caller: PageWriter, console: ConsoleDep
) -> HTMLResponse:
    if kind not in DESTINATION_TYPES:
        raise ApiProblem(404, f"no destination type {kind!r} (dicom or stow)")
    return _destination_page(request, caller, console, ae_title, new_destination(kind), stored=None)


@router.get("/gateway/{ae_title}/destinations/{destination}")
def destination_page(
    ae_title: str, destination: str, request: Request, caller: PageReader, console: ConsoleDep
) -> HTMLResponse:
    _, document = console.editor.masked_view()
    _, node = _node(document, ae_title)
    index = routing.child_index(node, "destinations", "id", destination, "destination")
    return _destination_page(request, caller, console, ae_title, node["destinations"][index], stored=destination)


async def _save_destination(
    request: Request, caller: Caller, console: Console, ae_title: str, stored: str | None
) -> Response:
    form = FormReader(await request.form())
    kind = form.text("type") or ""
    if kind not in DESTINATION_TYPES:
        raise ApiProblem(422, f"no destination type {kind!r} (dicom or stow)")
    body = destination_body(form, kind)
    _, document = console.editor.document()
    node_at, node = _node(document, ae_title)
    try:
        if stored is None:
            under = f"forward_nodes[{node_at}].destinations[{len(node.get('destinations') or [])}]"
            routing.store_new_destination(console, caller, ae_title, body, based_on(form))
        else:
            index = routing.child_index(node, "destinations", "id", stored, "destination")
            under = f"forward_nodes[{node_at}].destinations[{index}]"
            routing.store_destination(console, caller, ae_title, stored, body, based_on(form))
    except ApiProblem as problem:
        errors = FormErrors.from_problem(problem, under=under)
        return _destination_page(
            request, caller, console, ae_title, body, stored=stored, errors=errors, status=problem.status
        )
    return see_other(f"/gateway/{quote(ae_title, safe='')}")


@router.post("/gateway/{ae_title}/destinations")
async def create_destination(ae_title: str, request: Request, caller: PageWriter, console: ConsoleDep) -> Response:
    return await _save_destination(request, caller, console, ae_title, None)


@router.post("/gateway/{ae_title}/destinations/{destination}")
async def save_destination(
    ae_title: str, destination: str, request: Request, caller: PageWriter, console: ConsoleDep
) -> Response:
    return await _save_destination(request, caller, console, ae_title, destination)


@router.post("/gateway/{ae_title}/destinations/{destination}/delete")
async def delete_destination(
    ae_title: str, destination: str, request: Request, caller: PageWriter, console: ConsoleDep
) -> Response:
    form = FormReader(await request.form())
    try:
        routing.delete_destination(ae_title, destination, caller, console, based_on(form), force=form.checked("force"))
    except ApiProblem as problem:
        _, document = console.editor.masked_view()
        _, node = _node(document, ae_title)
        index = routing.child_index(node, "destinations", "id", destination, "destination")
        errors = FormErrors(summary=problem.detail)
        return _destination_page(
            request,
            caller,
            console,
            ae_title,
            node["destinations"][index],
            stored=destination,
            errors=errors,
            status=problem.status,
        )
    return see_other(f"/gateway/{quote(ae_title, safe='')}")


@router.get("/gateway/{ae_title}/destinations-activity")
def destinations_activity(ae_title: str, request: Request, caller: PageReader, console: ConsoleDep) -> HTMLResponse:
    """The list's Activity and Queue depth cells (htmx loads them after the page: RabbitMQ may be slow)."""
    _, document = console.editor.masked_view()
    _, node = _node(document, ae_title)
    destinations = list(node.get("destinations") or [])
    return render(
        request,
        "gateway/activity.html",
        caller,
        destinations=destinations,
        depths=queue_depths(console, destinations),
    )


# --- the form's helpers: Authorization header, Kheops rows, echo and probes -----------------------


@router.post("/gateway-form/authorization-header")
def authorization_header(
    request: Request,
    caller: PageWriter,
    headers: Annotated[str, Form()] = "",
    authorization_type: Annotated[str, Form()] = "basic",
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    token: Annotated[str, Form()] = "",
) -> Response:
    """Karnak's "Generate Headers": the Headers field with an Authorization header appended, or the refusal
    (with the API's words) when the headers hold one already. Nothing is stored until Save."""
    try:
        asked = AuthorizationRequest(
            type="bearer" if authorization_type == "bearer" else "basic",
            username=username or None,
            password=password,
            token=token or None,
        )
        text = routing.with_authorization(headers.strip(), routing.authorization_value(asked))
    except ApiProblem as problem:
        response = render(request, "gateway/authorization-refused.html", caller, problem=problem)
        response.headers["HX-Retarget"] = "#authorization-result"
        response.headers["HX-Reswap"] = "innerHTML"
        return response
    response = render(request, "gateway/headers-field.html", caller, headers=headers_text(text), errors=FormErrors())
    response.headers["HX-Trigger"] = json.dumps({"karnak:authorization-generated": {}})
    return response


@router.get("/gateway-form/kheops-album-row")
def kheops_album_row(request: Request, caller: PageWriter) -> HTMLResponse:
    return render(
        request, "gateway/kheops-row.html", caller, album={}, index=None, key=secrets.token_hex(4), errors=FormErrors()
    )


@router.post("/gateway/{ae_title}/destinations/{destination}/echo")
def echo_destination(
    ae_title: str, destination: str, request: Request, caller: PageOperator, console: ConsoleDep
) -> HTMLResponse:
    """C-ECHO (DICOM, with its calling AE and TLS) or the STOW probe, answered as a fragment beside the button."""
    _, document = console.editor.masked_view()
    _, node = _node(document, ae_title)
    dest = node["destinations"][routing.child_index(node, "destinations", "id", destination, "destination")]
    try:
        if dest.get("type") == "dicom":
            found = echo(console, destination, None, None, None, None)
            ok, message = (
                found.success,
                (
                    f"C-ECHO {found.calling_ae_title} → {found.called_ae_title}@{found.hostname}:{found.port}"
                    f"{' (TLS)' if found.tls else ''}: {found.message} in {found.elapsed_ms} ms"
                ),
            )
        else:
            probe = stow_probe(console, destination, None)
            ok = bool(probe.get("reachable")) and probe.get("http_status") not in (401, 403)
            message = f"{probe.get('url')}: {probe.get('message')} in {probe.get('elapsed_ms')} ms"
    except ApiProblem as problem:
        ok, message = False, problem.detail
    return render(request, "gateway/tool-result.html", caller, ok=ok, message=message)


@router.post("/gateway/{ae_title}/destinations/{destination}/kheops-check")
def check_kheops_tokens(
    ae_title: str,
    destination: str,
    request: Request,
    caller: PageOperator,
    console: ConsoleDep,
    album: Annotated[int, Form()] = 0,
) -> HTMLResponse:
    """Introspect an album's two tokens as the kheops-sharer does (active, scopes, what is missing)."""
    try:
        found = kheops_token(console, destination, album, None, None, "destination")
        parts = [
            f"{t['role']} token: " + ("valid" if t["valid"] else str(t.get("problem") or "not valid"))
            for t in found["tokens"]
        ]
        ok, message = bool(found["valid"]), "; ".join(parts)
    except ApiProblem as problem:
        ok, message = False, problem.detail
    return render(request, "gateway/tool-result.html", caller, ok=ok, message=message)
