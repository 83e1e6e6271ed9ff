"""`kuaijian cloud user add|list|passwd|revoke|token`: accounts from the command line (operator rights).

Does: parse options, read a password (from --password-file, from standard input with --password-stdin, or
asked twice on the terminal — never from the command line, where other users see it), open (and migrate) the
database and call cloud.accounts with the command line as the actor (recorded as "cli" in the audit log).
Exit codes: 0 ok, 2 invalid input / not found / conflict (message on stderr).

Does not: any account rule itself; `create-user` (a machine token for a system) stays in cloud.cli.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

ROLES = ("admin", "county", "town", "village", "station")


def _read_password(args: argparse.Namespace) -> str:
    from cloud.settings import read_secret_file

    if args.password_file is not None:
        return read_secret_file(Path(args.password_file))
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise ValueError("no password on standard input")
        return line
    first = getpass.getpass("密码 password: ")
    if getpass.getpass("再次输入 again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def _open(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from cloud.accounts import Policy
    from cloud.clock import SystemClock
    from cloud.db import open_db
    from cloud.settings import Settings, db_setting

    settings = Settings() if args.db is None else Settings(**db_setting(args.db))
    return open_db(settings.database), Policy.from_settings(settings), SystemClock().now()


def _run(args: argparse.Namespace, action: Any) -> int:
    from cloud.errors import CloudError

    try:
        password = _read_password(args) if getattr(args, "needs_password", False) else ""
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    db, policy, now = _open(args)
    try:
        action(db, policy, now, password)
    except CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        db.close()
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from cloud import accounts

    def act(db: Any, policy: Any, now: Any, password: str) -> None:
        accounts.add_user(
            db, None, args.name, args.role, args.node, password, now, policy, display_name=args.display_name
        )
        print(f"user {args.name} added ({args.role}{' ' + args.node if args.node else ''})")

    return _run(args, act)


def cmd_passwd(args: argparse.Namespace) -> int:
    from cloud import accounts

    def act(db: Any, policy: Any, now: Any, password: str) -> None:
        accounts.reset_password(db, None, args.name, password, now, policy)
        print(f"password of {args.name} set; its sessions ended, the account is unlocked")

    return _run(args, act)


def cmd_revoke(args: argparse.Namespace) -> int:
    from cloud import accounts

    def act(db: Any, policy: Any, now: Any, password: str) -> None:
        accounts.revoke_user(db, None, args.name, now)
        print(f"user {args.name} revoked; every token it held stopped working")

    return _run(args, act)


def cmd_token(args: argparse.Namespace) -> int:
    from cloud import accounts

    def act(db: Any, policy: Any, now: Any, password: str) -> None:
        print(accounts.issue_token(db, None, args.name, now, policy))

    return _run(args, act)


def cmd_list(args: argparse.Namespace) -> int:
    from cloud import accounts

    def act(db: Any, policy: Any, now: Any, password: str) -> None:
        print("name\trole\tnode\tnode name\tpassword\tlocked until\trevoked at")
        for a in accounts.list_users(db, None):
            print(
                "\t".join(
                    [
                        a.name,
                        a.role,
                        a.node or "-",
                        a.node_name or "-",
                        "yes" if a.has_password else "no",
                        a.locked_until or "-",
                        a.revoked_at or "-",
                    ]
                )
            )

    return _run(args, act)


def _password_options(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument("--password-file", default=None, help="file whose first line is the password")
    source.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(needs_password=True)


def register(subparsers: Any) -> None:
    user = subparsers.add_parser("user", help="accounts: add, list, passwd, revoke, token")
    verbs = user.add_subparsers(dest="user_verb", required=True)

    def db_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--db",
            default=None,
            help="database: a SQLite file or postgresql://user@host:port/db (default: $KJ_CLOUD_DB_URL or $KJ_CLOUD_DB_PATH)",
        )

    p = verbs.add_parser("add", help="add a person who logs in with a password")
    db_option(p)
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--node", default=None, help="grid node code of the user (not for admin)")
    p.add_argument("--display-name", default=None, help="full name shown in the dashboard")
    _password_options(p)
    p.set_defaults(func=cmd_add)

    p = verbs.add_parser("list", help="every user: role, node, password or not, locked, revoked")
    db_option(p)
    p.set_defaults(func=cmd_list)

    p = verbs.add_parser("passwd", help="set a user's password (unlocks it, ends its sessions)")
    db_option(p)
    p.add_argument("name")
    _password_options(p)
    p.set_defaults(func=cmd_passwd)

    p = verbs.add_parser("revoke", help="disable a user: every token it holds stops working at once")
    db_option(p)
    p.add_argument("name")
    p.set_defaults(func=cmd_revoke)

    p = verbs.add_parser("token", help="issue a machine token (cloud.machine_token_days) for a user")
    db_option(p)
    p.add_argument("name")
    p.set_defaults(func=cmd_token)
