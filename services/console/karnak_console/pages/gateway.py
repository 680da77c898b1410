"""The Gateway pages: forward nodes, their sources and destinations (Karnak's `/forwardnode`)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from karnak_console.api.common import ConsoleDep
from karnak_console.pages import PageReader, page_router, render

router = page_router()


@router.get("/gateway")
def forward_nodes(request: Request, caller: PageReader, console: ConsoleDep) -> HTMLResponse:
    revision, document = console.editor.masked()
    nodes: list[dict[str, Any]] = list(document.get("forward_nodes") or [])
    return render(request, "gateway/nodes.html", caller, nodes=nodes, revision=revision)
