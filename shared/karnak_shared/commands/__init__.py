"""The `karnak` command's groups, one module each with a `register(subparsers)` function."""
