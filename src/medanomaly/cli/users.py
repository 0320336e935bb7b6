"""``medanomaly users``: create and manage the workstation's users (the first admin comes from here)."""

from __future__ import annotations

import argparse
import getpass
import sys

from medanomaly.service.cli_common import add_database_arguments, open_database, settings_from


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the subcommand and its actions."""
    parser = subparsers.add_parser("users", help="manage workstation users (add, list, passwd, disable, enable)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create a user")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="give the admin role (default: radiologist)")
    passwd = actions.add_parser("passwd", help="set a user's password (ends their sessions)")
    passwd.add_argument("name")
    for action in (add, passwd):
        action.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    for name in ("disable", "enable"):
        actions.add_parser(name, help=f"{name} a user").add_argument("name")
    actions.add_parser("list", help="list users")
    for action in actions.choices.values():
        add_database_arguments(action)
    parser.set_defaults(run=run)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        msg = "no terminal to ask for the password: pipe it in with --password-stdin"
        raise ValueError(msg)
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        msg = "the passwords differ; nothing changed"
        raise ValueError(msg)
    return first


def run(args: argparse.Namespace) -> int:
    """Carry out the action (audited as ``cli``)."""
    from sqlalchemy import select

    from medanomaly.service import audit
    from medanomaly.service.db import User

    settings = settings_from(args)
    with open_database(settings)() as db:
        if args.action == "list":
            for user in db.scalars(select(User).order_by(User.username)):
                print(f"{user.username:24s} {user.role:12s} {'active' if user.active else 'disabled'}")
            return 0
        user = _change(db, settings, args, db.scalar(select(User).where(User.username == args.name)))
        action = "create" if args.action == "add" else args.action
        audit.record(db, None, f"user.{action}", f"user:{user.id}", actor="cli", role=user.role)
        db.commit()
        print(f"user {user.username} ({user.role}): {args.action} done")
    return 0


def _change(db, settings, args: argparse.Namespace, user):
    """Apply add/passwd/disable/enable to ``user`` (None for a new one); returns the user, flushed."""
    from medanomaly.service.db import User, utcnow
    from medanomaly.service.security import check_username, hash_password, password_hasher

    hasher = password_hasher(settings.password_time_cost, settings.password_memory_kib)
    if args.action == "add":
        if user is not None:
            msg = f"user {args.name!r} exists already; use 'medanomaly users passwd {args.name}'"
            raise ValueError(msg)
        check_username(args.name)
        user = User(username=args.name, role="admin" if args.admin else "radiologist",
                    password_hash=hash_password(hasher, _read_password(args.password_stdin), args.name))
        db.add(user)
        db.flush()
        return user
    if user is None:
        msg = f"no user {args.name!r} (see 'medanomaly users list')"
        raise ValueError(msg)
    if args.action == "passwd":
        user.password_hash = hash_password(hasher, _read_password(args.password_stdin), user.username)
        user.password_changed_at = utcnow()
    else:
        user.active = args.action == "enable"
    user.session_epoch += 1  # ends the user's sessions
    return user
