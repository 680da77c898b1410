"""Command groups of the `karnak` command, one module each with a `register(subparsers)` function."""
