"""``medanomaly pacs ...``: work beside a PACS over DICOMweb (Orthanc): pull, score, push results back as DICOM.

Subcommands: ``list`` (QIDO-RS), ``pull --study UID --model DIR``, ``watch --model DIR``, ``push --study UID`` /
``push --pending``, ``status``. Connection: ``--url/--user`` or ``MEDANOMALY_PACS_URL``, ``MEDANOMALY_PACS_USER``,
``MEDANOMALY_PACS_PASSWORD``, or a ``--settings`` TOML/YAML file.
"""

from __future__ import annotations

import argparse
from typing import Any

from medanomaly.cli.score import format_line


def _add_connection(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("PACS connection (default: MEDANOMALY_PACS_* environment variables)")
    group.add_argument("--url", default=None, help="DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web")
    group.add_argument("--user", default=None, help="HTTP basic-auth user")
    group.add_argument("--password", default=None, help="password (prefer MEDANOMALY_PACS_PASSWORD: not in ps)")
    group.add_argument("--settings", default=None, metavar="FILE", help="TOML or YAML file with the PACS settings")
    group.add_argument("--workdir", default=None, help="outbox + downloads folder (default ~/.local/share/...)")
    group.add_argument("--retries", type=int, default=None, help="attempts per request before giving up (default 4)")
    group.add_argument("--ca-bundle", default=None, metavar="PEM", help="CA file that signed the PACS's certificate")


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory written by 'medanomaly train'")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--db", default=None, metavar="URL", help="the web service's database URL: register results in its worklist"
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``pacs`` and its subcommands."""
    parser = subparsers.add_parser("pacs", help="pull studies from a PACS (DICOMweb), score them, push DICOM results")
    commands = parser.add_subparsers(dest="pacs_command", required=True, metavar="SUBCOMMAND")
    listing = commands.add_parser("list", help="list the studies in the PACS (QIDO-RS)")
    listing.add_argument("--modalities", default=None, help="comma-separated, e.g. CT,CR,DX")
    listing.add_argument("--since", default=None, help="first study date, YYYYMMDD or YYYY-MM-DD")
    listing.add_argument("--until", default=None, help="last study date")
    listing.add_argument("--limit", type=int, default=50)
    pull = commands.add_parser("pull", help="pull one study, score it and send the results back")
    pull.add_argument("--study", required=True, action="append", help="Study Instance UID (repeatable)")
    pull.add_argument("--no-send", action="store_true", help="queue the results in the outbox without sending")
    _add_model(pull)
    watch = commands.add_parser("watch", help="poll the PACS for new studies and process each")
    watch.add_argument("--modalities", default=None, help="comma-separated (default from settings: CT,CR,DX)")
    watch.add_argument("--interval", type=float, default=None, help="seconds between polls (default 30)")
    watch.add_argument("--once", action="store_true", help="one poll, then exit")
    watch.add_argument(
        "--since", default=None, metavar="DATE", help="first study date (default: the day of the first start)"
    )
    watch.add_argument(
        "--stable-seconds", type=float, default=None, help="score a study once no instance came for this long (60)"
    )
    _add_model(watch)
    listen = commands.add_parser("listen", help="receive studies over DICOM (C-STORE), score them, send results back")
    listen.add_argument("--port", type=int, default=None, help="port to listen on (default 11112)")
    listen.add_argument("--host", default=None, help="address to listen on (default 0.0.0.0)")
    listen.add_argument("--ae-title", default=None, help="our AE title (default MEDANOMALY)")
    listen.add_argument("--peer", default=None, metavar="AET@HOST:PORT", help="C-STORE results there (else STOW-RS)")
    listen.add_argument("--modalities", default=None, help="comma-separated (default from settings: CT,CR,DX)")
    listen.add_argument("--stable-seconds", type=float, default=None, help="score once nothing came for this long")
    listen.add_argument("--for", dest="duration", type=float, default=None, help="stop after SECONDS (default: never)")
    _add_model(listen)
    push = commands.add_parser("push", help="send results from the outbox (twice is safe: no duplicates)")
    which = push.add_mutually_exclusive_group(required=True)
    which.add_argument("--study", action="append", help="re-send every result of this study (repeatable)")
    which.add_argument("--pending", action="store_true", help="send everything still waiting")
    status = commands.add_parser("status", help="show the outbox and whether the PACS answers")
    status.add_argument("--study", default=None, help="list the items of one study")
    status.add_argument("--json", action="store_true", help="machine-readable, for monitoring")
    for sub in (listing, pull, watch, listen, push, status):
        _add_connection(sub)
        sub.set_defaults(run=run)


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from medanomaly.pacs.settings import load_settings

    return load_settings(
        args.settings,
        url=args.url,
        user=args.user,
        password=args.password,
        workdir=args.workdir,
        retries=args.retries,
        ca_bundle=args.ca_bundle,
        **extra,
    )


def run(args: argparse.Namespace) -> int:
    """Dispatch to the subcommand."""
    handlers = {
        "list": _run_list,
        "pull": _run_pull,
        "watch": _run_watch,
        "listen": _run_listen,
        "push": _run_push,
        "status": _run_status,
    }
    return handlers[args.pacs_command](args)


def _run_list(args: argparse.Namespace) -> int:
    from medanomaly.pacs.client import PacsClient

    settings = _settings(args)
    modalities = [m.strip() for m in args.modalities.split(",")] if args.modalities else None
    studies = PacsClient(settings).search_studies(modalities, args.since, args.until, limit=args.limit)
    for study in studies:
        print(
            f"{study.study_uid}  {study.study_date or '-':8}  {'/'.join(study.modalities) or '-':10}  "
            f"patient {study.patient_id or '-'}  {study.description}"
        )
    print(f"{len(studies)} study(ies)")
    return 0


def _load_model(args: argparse.Namespace) -> Any:
    from medanomaly.model import Model

    model = Model.load(args.model, device=args.device)
    model.info["path"] = str(args.model)
    return model


def _worklist(args: argparse.Namespace) -> Any:
    if not args.db:
        return None
    from medanomaly.pacs.worklist import Worklist

    return Worklist(args.db)


def _print_report(report: Any, kind: str) -> None:
    print(f"study {report.study_uid}: {len(report.scored)} of {len(report.outcomes)} unit(s) scored")
    for outcome in report.outcomes:
        if outcome.error:
            print(f"  {outcome.modality} {outcome.series_uid}: not scored: {outcome.error}")
            continue
        queued = ", ".join(f"{outcome.queued.count(k)} {k.upper()}" for k in dict.fromkeys(outcome.queued))
        print(f"  {outcome.modality} {format_line(outcome.result, kind)}  -> {queued}")
        for note in outcome.notes:
            print(f"    note: {note}")
    if report.registered:
        print(f"  registered {report.registered} result(s) in the service's worklist")
    if report.flush is not None:
        _print_flush(report.flush)


def _print_flush(flush: Any) -> None:
    print(
        f"sent {flush.sent} result instance(s), {flush.already_there} already in the PACS"
        + (f", {flush.rejected} rejected" if flush.rejected else "")
    )
    if flush.error:
        print(f"PACS unavailable: {flush.error}")
    if flush.pending:
        print(f"{flush.pending} instance(s) wait in the outbox: 'medanomaly pacs push --pending' sends them")


def _run_pull(args: argparse.Namespace) -> int:
    from medanomaly.pacs.client import PacsClient
    from medanomaly.pacs.outbox import Outbox
    from medanomaly.pacs.sync import process_study

    settings = _settings(args)
    client, outbox, model = PacsClient(settings), Outbox(settings.outbox_dir), _load_model(args)
    worklist, failed = _worklist(args), False
    for study_uid in args.study:
        report = process_study(client, model, study_uid, outbox, settings, worklist=worklist, send=not args.no_send)
        _print_report(report, model.detector.kind)
        failed |= not report.scored or any(o.error for o in report.outcomes)
        failed |= report.flush is not None and not report.flush.ok
    return 1 if failed else 0


def _run_watch(args: argparse.Namespace) -> int:
    from medanomaly.pacs.client import PacsClient, PacsError
    from medanomaly.pacs.outbox import Outbox
    from medanomaly.pacs.watcher import watch

    settings = _settings(
        args, modalities=args.modalities, interval=args.interval, since=args.since, stable_seconds=args.stable_seconds
    )
    client, outbox, model = PacsClient(settings), Outbox(settings.outbox_dir), _load_model(args)
    kind = model.detector.kind

    def on_pass(reports: Any) -> None:
        if isinstance(reports, PacsError):
            print(f"PACS unavailable or misconfigured, will retry in {settings.interval:g} s: {reports}", flush=True)
            return
        for report in reports:
            _print_report(report, kind)
        counts = outbox.counts()
        print(
            f"poll done: {len(reports)} new study(ies); outbox {counts['pending']} pending, "
            f"{counts['rejected']} rejected",
            flush=True,
        )

    print(
        f"watching {settings.url} for {','.join(settings.modalities)} studies"
        + ("" if args.once else f" every {settings.interval:g} s (Ctrl-C stops)"),
        flush=True,
    )
    watch(
        client, model, outbox, settings, worklist=_worklist(args), max_passes=1 if args.once else None, on_pass=on_pass
    )
    counts = outbox.counts()
    return 1 if counts["pending"] or counts["rejected"] else 0


def _run_listen(args: argparse.Namespace) -> int:
    import time

    from medanomaly.pacs.client import PacsClient
    from medanomaly.pacs.dimse import DimseSender, Receiver, process_inbox
    from medanomaly.pacs.outbox import Outbox

    settings = _settings(
        args,
        listen_port=args.port,
        listen_host=args.host,
        ae_title=args.ae_title,
        dimse_peer=args.peer,
        modalities=args.modalities,
        stable_seconds=args.stable_seconds,
    )
    outbox, model = Outbox(settings.outbox_dir), _load_model(args)
    sender = DimseSender(settings) if settings.dimse_peer else PacsClient(settings)
    receiver = Receiver(settings, outbox)
    receiver.start()
    where = settings.dimse_peer or settings.url or "(nowhere: set --peer or --url)"
    print(f"{settings.ae_title} listening on {settings.listen_host}:{settings.listen_port}; results to {where}")
    deadline = None if args.duration is None else time.monotonic() + args.duration
    pause, worklist = min(settings.interval, max(settings.stable_seconds / 2, 0.5)), _worklist(args)
    try:
        while deadline is None or time.monotonic() < deadline:
            for report in process_inbox(model, outbox, settings, sender, worklist=worklist):
                _print_report(report, model.detector.kind)
            time.sleep(pause)
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
    counts = outbox.counts()
    return 1 if counts["pending"] or counts["rejected"] else 0


def _run_push(args: argparse.Namespace) -> int:
    from medanomaly.pacs.client import PacsClient
    from medanomaly.pacs.outbox import Outbox

    settings = _settings(args)
    client, outbox = PacsClient(settings), Outbox(settings.outbox_dir)
    studies = args.study or [None]
    ok = True
    for study_uid in studies:
        if study_uid is not None and outbox.requeue(study_uid) == 0:
            print(f"study {study_uid}: no results in the outbox ({settings.outbox_dir}); run 'pacs pull' first")
            ok = False
            continue
        flush = outbox.flush(client, study_uid)
        _print_flush(flush)
        ok &= flush.ok
    rejected = outbox.counts()["rejected"]
    if rejected:
        print(f"{rejected} instance(s) rejected by the PACS ('medanomaly pacs status' shows why)")
    return 0 if ok and not rejected else 1


def _run_status(args: argparse.Namespace) -> int:
    """Outbox counts, pending/rejected items, studies seen, whether the PACS answers (1: rejected or down)."""
    import json
    from dataclasses import replace

    from medanomaly.pacs.client import PacsClient, PacsError
    from medanomaly.pacs.ledger import StudyLedger
    from medanomaly.pacs.outbox import Outbox

    settings = _settings(args)
    outbox = Outbox(settings.outbox_dir)
    counts, studies = outbox.counts(), StudyLedger(outbox).all()
    items = outbox.items(study_uid=args.study) if args.study else outbox.items(status="pending")
    items += [] if args.study else outbox.items(status="rejected")
    try:
        PacsClient(replace(settings, retries=1)).ping()
        pacs_error = None
    except PacsError as error:
        pacs_error = str(error)
    by_status: dict[str, int] = {}
    for state in studies.values():
        by_status[state.status] = by_status.get(state.status, 0) + 1
    if args.json:
        print(json.dumps(_status_json(settings, counts, by_status, items, pacs_error), indent=2))
    else:
        _print_status(settings, counts, by_status, items, pacs_error)
    return 1 if pacs_error or counts["rejected"] else 0


def _status_json(settings: Any, counts: dict, by_status: dict, items: list, pacs_error: str | None) -> dict:
    return {
        "outbox": str(settings.outbox_dir),
        "items": counts,
        "studies": by_status,
        "pacs": {"url": settings.url, "answering": pacs_error is None, "error": pacs_error},
        "waiting": [
            {
                "status": i.status,
                "kind": i.kind,
                "study": i.study_uid,
                "sop_instance_uid": i.sop_uid,
                "attempts": i.attempts,
                "last_error": i.last_error,
                "updated": i.updated,
            }
            for i in items
        ],
    }


def _print_status(settings: Any, counts: dict, by_status: dict, items: list, pacs_error: str | None) -> None:
    print(
        f"outbox {settings.outbox_dir}: {counts['pending']} pending, {counts['sent']} sent, "
        f"{counts['rejected']} rejected, {counts['superseded'] + counts['deleted']} superseded; "
        f"{sum(by_status.values())} study(ies) seen by the watcher"
        + (f" ({', '.join(f'{n} {k}' for k, n in sorted(by_status.items()))})" if by_status else "")
    )
    for item in items:
        error = f"  last error: {item.last_error}" if item.last_error else ""
        print(f"  {item.status:8} {item.kind.upper():4} study {item.study_uid} attempts {item.attempts}{error}")
    if pacs_error:
        print(f"PACS {settings.url or '(not configured)'}: NOT answering ({pacs_error})")
    else:
        print(f"PACS {settings.url}: answering")
