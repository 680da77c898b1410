"""The monitor service: consumes every transfer event and records it with `karnak_monitor` (DESIGN.md section 16).

The tables, their reading and their retention live in `libs/monitor` (`karnak_monitor`), which the
console and the `karnak monitoring` commands use too; this package is only the runnable service.
"""
