"""``medanomaly serve``: the radiologist's workstation (web UI + JSON API) on one machine."""

from __future__ import annotations

import argparse
import logging

from medanomaly.service.cli_common import add_database_arguments, settings_from


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    parser = subparsers.add_parser("serve", help="start the web workstation (needs the 'service' extra)")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[NAME=]MODEL_DIR",
        help="model directory to serve (repeatable; the first is the default)",
    )
    add_database_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-upload-mb", type=float, default=None, help="largest upload (default 512)")
    parser.add_argument("--device", default=None, help="torch device for scoring (default cpu)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Migrate the database, load the models and serve until interrupted."""
    import uvicorn
    from sqlalchemy import func, select

    from medanomaly.service.app import create_app
    from medanomaly.service.db import User

    settings = settings_from(
        args, model_dirs=tuple(args.model) or None, max_upload_mb=args.max_upload_mb, device=args.device
    )
    app = create_app(settings)
    for name, problem in app.state.store.errors.items():
        print(f"warning: model {name} unavailable: {problem}")
    if not settings.model_dirs:
        print("warning: no --model given: uploads are refused until the server is started with --model MODEL_DIR")
    with app.state.session_factory() as db:
        if not db.scalar(select(func.count()).select_from(User)):
            print(
                f"no users yet: create the first admin with 'medanomaly users add NAME --admin "
                f"--data-dir {settings.data_dir}'"
            )
    print(f"medanomaly workstation on http://{args.host}:{args.port}/  (API docs: /docs; data: {settings.data_dir})")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO)
    for name in ("medanomaly.access", "medanomaly.service.audit"):  # request lines and audit rows, even without -v
        if logging.getLogger(name).getEffectiveLevel() > logging.INFO:
            logging.getLogger(name).setLevel(logging.INFO)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="info")
    return 0
