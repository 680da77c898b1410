"""Karnak's console: the REST API (`/api/v1`) and, on the same authentication, the web pages (DESIGN.md section 15)."""
