"""The REST API's routers, one module per group of resources (DESIGN.md section 15)."""
