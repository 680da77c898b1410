"""`karnak users` and `karnak tokens`: the console's accounts from the command line (audited, origin cli).

Passwords are read from standard input (a terminal prompts without echo), never from the command line
where `ps` and shell histories would show them. A token is printed once: only its hash is stored.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from karnak_console.roles import ROLES
from karnak_shared.errors import ConfigError, KarnakError

EXIT_RUNTIME = 1
EXIT_USAGE = 2


def _stores(config_path: str | None) -> tuple[Any, Any]:
    from karnak_console.accounts import AccountStore
    from karnak_console.audit import AuditLog
    from karnak_shared.config import read_config_file
    from karnak_shared.database import create_database_engine, upgrade_schema

    settings = read_config_file(config_path).settings
    engine = create_database_engine(settings.database.url.get_secret_value())
    upgrade_schema(engine)
    accounts = AccountStore(engine)
    return accounts, AuditLog(accounts.sessions)


def _read_password(prompt: str) -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\r\n")


def _audit(audit: Any, action: str, obj: str, after: dict[str, Any] | None = None) -> None:
    from karnak_shared.revisions import default_author

    audit.record(
        actor=default_author(),
        origin="cli",
        client="cli",
        action=action,
        object=obj,
        diff=[] if after is None else [{"path": obj, "kind": "added", "before": None, "after": after}],
    )


def cmd_users(args: argparse.Namespace) -> int:
    from karnak_console.accounts import AccountError

    try:
        accounts, audit = _stores(args.config)
        if args.action == "list":
            for user in accounts.users():
                print(f"{user.name}\t{user.role}\t{user.source}\tlast login {user.last_login_at or '-'}")
            return 0
        if args.action == "add":
            accounts.add_user(args.name, args.role, _read_password("password: "))
            _audit(audit, "create", f"users/{args.name}", {"role": args.role})
            print(f"added user {args.name} ({args.role})")
        elif args.action == "passwd":
            accounts.set_password(args.name, _read_password("new password: "))
            _audit(audit, "set-password", f"users/{args.name}")
            print(f"changed the password of {args.name}")
        else:
            accounts.remove_user(args.name)
            _audit(audit, "delete", f"users/{args.name}")
            print(f"removed user {args.name}")
        return 0
    except (AccountError, ConfigError) as exc:
        print(f"karnak: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KarnakError as exc:
        print(f"karnak: {exc}", file=sys.stderr)
        return EXIT_RUNTIME


def cmd_tokens(args: argparse.Namespace) -> int:
    from karnak_console.accounts import AccountError
    from karnak_shared.revisions import default_author

    try:
        accounts, audit = _stores(args.config)
        if args.action == "list":
            for token in accounts.tokens():
                state = f"revoked {token.revoked_at}" if token.revoked_at else "active"
                print(f"{token.name}\t{token.role}\t{state}\tcreated {token.created_at} by {token.created_by}")
            return 0
        if args.action == "create":
            _, token = accounts.create_token(args.name, args.role, default_author())
            _audit(audit, "create", f"tokens/{args.name}", {"role": args.role})
            print(token)
            print(f"(token {args.name}, role {args.role}: shown this once, stored hashed)", file=sys.stderr)
        else:
            accounts.revoke_token(args.name)
            _audit(audit, "revoke", f"tokens/{args.name}")
            print(f"revoked token {args.name}")
        return 0
    except (AccountError, ConfigError) as exc:
        print(f"karnak: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KarnakError as exc:
        print(f"karnak: {exc}", file=sys.stderr)
        return EXIT_RUNTIME


def register_users(subparsers: Any) -> None:
    """Add `karnak users add|passwd|remove|list` to the `karnak` command line."""
    parser = subparsers.add_parser("users", help="the console's local accounts (passwords on standard input)")
    parser.add_argument("action", choices=["add", "passwd", "remove", "list"])
    parser.add_argument("name", nargs="?", default="")
    parser.add_argument("--role", choices=ROLES, default="viewer")
    parser.add_argument("--config", help="configuration file (default: $KARNAK_CONFIG)")
    parser.set_defaults(func=_needs_name(cmd_users))


def register_tokens(subparsers: Any) -> None:
    """Add `karnak tokens create|revoke|list` to the `karnak` command line."""
    parser = subparsers.add_parser("tokens", help="API tokens for scripts (printed once, stored hashed)")
    parser.add_argument("action", choices=["create", "revoke", "list"])
    parser.add_argument("name", nargs="?", default="")
    parser.add_argument("--role", choices=ROLES, default="viewer")
    parser.add_argument("--config", help="configuration file (default: $KARNAK_CONFIG)")
    parser.set_defaults(func=_needs_name(cmd_tokens))


def _needs_name(command: Any) -> Any:
    def checked(args: argparse.Namespace) -> int:
        if args.action != "list" and not args.name:
            print(f"karnak: {args.command} {args.action} needs a NAME", file=sys.stderr)
            return EXIT_USAGE
        result: int = command(args)
        return result

    return checked
