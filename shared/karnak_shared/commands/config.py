"""`karnak config`: check a configuration file; apply, export, list, compare and roll back revisions.

The revision commands read the service settings (database, secrets key, broker) from `--config` or
$KARNAK_CONFIG and work on the revisions in that database (DESIGN.md section 14). They print secrets only
as the `${ENV}`/`${file:}` references they were given as, or as `${encrypted:...}`; never in clear.

Exit codes: 0 success, 1 runtime failure (database or broker unreachable, a concurrent apply won),
2 invalid configuration or usage (the problems are named by their field paths).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from karnak_shared.config import CONFIG_ENV, load_config, read_config_file
from karnak_shared.errors import BrokerUnavailable, ConfigError, KarnakError

if TYPE_CHECKING:  # imported when a revision command runs: `karnak run` needs no SQL or cryptography
    from karnak_shared.revisions import ApplyResult, RevisionStore

EXIT_RUNTIME = 1
EXIT_CONFIG = 2


def _fail(message: str, code: int) -> int:
    print(f"karnak: {message}", file=sys.stderr)
    return code


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a configuration file: its settings, and its routing part when it has one."""
    try:
        file = read_config_file(args.file)
        if not file.routing:
            if file.settings.configuration.source == "file":
                raise ConfigError("forward_nodes: is required (configuration.source is file)")
            print(
                f"{args.file}: valid service settings; the routing configuration comes from the database "
                "(configuration.source: database; see `karnak config history`)"
            )
            return 0
        config = load_config(args.file)
    except ConfigError as exc:
        return _fail(f"invalid configuration:\n{exc}", EXIT_CONFIG)
    # Imported here: the DICOM engines are heavy and only this command needs them. Every profile is loaded
    # and every expression compiled as the processor does at start-up.
    from karnak_shared.profiles import compile_every_destination

    problems = compile_every_destination(config, config.base_dir)
    if problems:
        return _fail("invalid configuration:\n" + "\n".join(problems), EXIT_CONFIG)
    destinations = sum(len(node.destinations) for node in config.forward_nodes)
    print(f"{args.file}: valid ({len(config.forward_nodes)} forward node(s), {destinations} destination(s))")
    for node, dest in config.destinations():
        state = "enabled" if dest.enabled else "disabled"
        print(f"  {node.ae_title} -> {dest.id} ({dest.type}, {state})")
    return 0


def _store(settings_path: str) -> RevisionStore:
    from karnak_shared.revisions import RevisionStore

    return RevisionStore.open(settings_path)


def _settings_path(args: argparse.Namespace, fallback: str | None = None) -> str:
    chosen = args.config or os.environ.get(CONFIG_ENV) or fallback
    if not chosen:
        raise ConfigError(f"no configuration file for the service settings: pass --config FILE or set {CONFIG_ENV}")
    return str(chosen)


def _print_result(result: ApplyResult, what: str) -> None:
    from karnak_shared.revisions import format_changes

    for line in format_changes(result.changes):
        print(line)
    if not result.changed:
        print(f"no change: revision {result.number} stays")
    elif result.dry_run:
        print(
            f"dry run: {what} would be revision {result.number} (based on revision {result.based_on}); nothing stored"
        )
    else:
        print(f"stored revision {result.number} (based on revision {result.based_on}, checksum {result.checksum})")


def _notify(store: RevisionStore, result: ApplyResult) -> None:
    if result.revision is None:
        return
    try:
        store.notify(result.revision)
    except BrokerUnavailable as exc:
        print(
            f"karnak: revision {result.number} is stored but the services were not told ({exc}); "
            "each picks it up at its next check (within 30 s)",
            file=sys.stderr,
        )
        return
    print("services notified")


def cmd_apply(args: argparse.Namespace) -> int:
    from karnak_shared.revisions import default_author, read_routing_file

    given = read_routing_file(args.file)
    # A whole configuration file (it names its database) may be both the settings and the routing.
    store = _store(_settings_path(args, fallback=args.file if "database" in given.ignored_settings else None))
    try:
        settings_file = store.config_file.path
        if given.ignored_settings and given.path != settings_file:
            print(
                f"karnak: {args.file}: {', '.join(given.ignored_settings)}: service settings are read at start-up "
                f"from {settings_file}, not part of a revision; ignored",
                file=sys.stderr,
            )
        if not given.routing:
            raise ConfigError(f"{args.file}: no forward_nodes: nothing to apply")
        document = store.read_document(args.file)
        result = store.apply(
            document,
            author=args.author or default_author(),
            origin="apply",
            comment=args.comment or "",
            based_on=args.based_on,
            dry_run=args.dry_run,
        )
        _print_result(result, args.file)
        _notify(store, result)
    finally:
        store.close()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    store = _store(_settings_path(args))
    try:
        revision = store.get(args.revision) if args.revision is not None else store.latest()
        if revision is None:
            raise ConfigError("the database holds no configuration revision yet: store one with `karnak config apply`")
        text = store.export(revision)
    finally:
        store.close()
    if args.output and args.output != "-":
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"exported {revision.describe()} to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    store = _store(_settings_path(args))
    try:
        revisions = store.history(limit=args.limit)
    finally:
        store.close()
    if args.json:
        rows = [
            {
                "revision": r.number,
                "created_at": r.created_at.isoformat(),
                "author": r.author,
                "origin": r.origin,
                "comment": r.comment,
                "checksum": r.checksum,
            }
            for r in revisions
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not revisions:
        print("no configuration revision yet")
        return 0
    for index, r in enumerate(revisions):
        when = r.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        mark = "*" if index == 0 else " "
        print(f"{mark}{r.number:>5}  {when}  {r.origin:<9}  {r.author}" + (f"  {r.comment}" if r.comment else ""))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from karnak_shared.revisions import format_changes

    store = _store(_settings_path(args))
    try:
        changes = store.diff(args.a, args.b)
    finally:
        store.close()
    for line in format_changes(changes):
        print(line)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from karnak_shared.revisions import default_author

    store = _store(_settings_path(args))
    try:
        result = store.rollback(
            args.number,
            author=args.author or default_author(),
            comment=args.comment or "",
            based_on=args.based_on,
            dry_run=args.dry_run,
        )
        _print_result(result, f"revision {args.number}")
        _notify(store, result)
    finally:
        store.close()
    return 0


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the errors of a revision command into a message and an exit code (never a traceback)."""
    from karnak_shared.revisions import RevisionConflict, RevisionNotFound, RoutingReadOnly

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ConfigError as exc:
            return _fail(f"invalid configuration:\n{exc}", EXIT_CONFIG)
        except (RevisionNotFound, RoutingReadOnly) as exc:
            return _fail(str(exc), EXIT_CONFIG)
        except (RevisionConflict, KarnakError) as exc:
            return _fail(str(exc), EXIT_RUNTIME)
        except Exception as exc:  # noqa: BLE001 - a database driver's error: name it, never a password
            from karnak_shared.logs import redact_url

            return _fail(f"the revision store failed: {type(exc).__name__}: {redact_url(str(exc))}", EXIT_RUNTIME)

    return run


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `karnak config check|apply|export|history|diff|rollback`."""
    config = subparsers.add_parser("config", help="check a configuration; apply, export, list and roll back revisions")
    sub = config.add_subparsers(dest="config_command", required=True)

    def settings_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", help="service settings (database, secrets key, broker); default $KARNAK_CONFIG")

    def change_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="print the diff, store nothing")
        parser.add_argument("--comment", help="why (shown by `karnak config history`)")
        parser.add_argument("--author", help="who (default: user@host)")
        parser.add_argument(
            "--based-on",
            type=int,
            help="fail unless this is still the latest revision (default: the latest when the command starts)",
        )

    check = sub.add_parser("check", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(func=cmd_check)

    apply = sub.add_parser("apply", help="store the routing configuration of FILE as a new revision and notify")
    apply.add_argument("file", help="YAML with forward_nodes and projects (a whole configuration file will do)")
    settings_option(apply)
    change_options(apply)
    apply.set_defaults(func=_guarded(cmd_apply))

    export = sub.add_parser("export", help="print a revision as YAML (secrets as references or encrypted)")
    export.add_argument("--revision", type=int, help="revision number (default: the latest)")
    export.add_argument("--output", "-o", help="write to this file instead of standard output")
    settings_option(export)
    export.set_defaults(func=_guarded(cmd_export))

    history = sub.add_parser("history", help="list the revisions, newest first (* the current one)")
    history.add_argument("--limit", type=int, help="at most this many")
    history.add_argument("--json", action="store_true", help="as JSON")
    settings_option(history)
    history.set_defaults(func=_guarded(cmd_history))

    diff = sub.add_parser("diff", help="what changed from revision A to revision B")
    diff.add_argument("a", type=int)
    diff.add_argument("b", type=int)
    settings_option(diff)
    diff.set_defaults(func=_guarded(cmd_diff))

    rollback = sub.add_parser("rollback", help="store a new revision equal to revision N and notify")
    rollback.add_argument("number", type=int, metavar="N")
    settings_option(rollback)
    change_options(rollback)
    rollback.set_defaults(func=_guarded(cmd_rollback))
