"""The monitor: keeps what happened to every series per destination, for the console's monitoring pages.

It consumes the transfer events (`transfer.#`), counts each event once (events carry an `event_id`) and keeps
one row per (forward node, destination, original series) with its instances, outcomes and reasons
(DESIGN.md section 16). `recorder` writes the rows, `queries` reads them, `retention` deletes old ones.
"""
