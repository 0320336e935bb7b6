"""The workstation's FastAPI application: ``create_app(settings)``.

Start-up (in :func:`create_app`, so the app is usable at once): create the data directory, migrate the database
(Alembic ``upgrade head``), register the served model versions. The lifespan starts and stops the scoring worker.
Layout follows FastAPI's "bigger applications": routers ``health``, ``auth``, ``studies``, ``admin`` (JSON API
under ``/api``, its description at ``/docs`` after log-in) and ``pages`` (server-rendered UI); ``account`` (own
password), ``login_locks`` (admin unlock) and ``api_docs``. Start-up also makes the data folder private and removes
temporary uploads left by a crash (:mod:`.private_files`); every request is logged on ``medanomaly.access``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import make_url
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from medanomaly import __version__
from medanomaly.service.db import make_engine, make_session_factory, migrate
from medanomaly.service.deps import UI_DIR, AuthRequired, CsrfError, Forbidden, csrf_protect, render
from medanomaly.service.jobs import JobRunner
from medanomaly.service.login_guard import LoginGuard, LoginRefused, client_address
from medanomaly.service.model_store import ModelStore
from medanomaly.service.private_files import clean_leftover_uploads, make_private
from medanomaly.service.retrain import RetrainRunner
from medanomaly.service.security import password_hasher
from medanomaly.service.settings import Settings
from medanomaly.service.storage import UploadRejected
from medanomaly.service.studies import fmt_score
from medanomaly.service.triage import result_band

logger = logging.getLogger(__name__)
access_log = logging.getLogger("medanomaly.access")
SESSION_COOKIE = "medanomaly_session"
_UPLOAD_PATHS = ("/api/studies", "/upload")
_ERROR_STATUS = {AuthRequired: 401, Forbidden: 403, CsrfError: 403}
_ERROR_TEXT = {AuthRequired: "log in first", CsrfError: "missing or wrong CSRF token: reload the page and try again"}


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(UI_DIR / "templates"))
    templates.env.filters["score"] = fmt_score
    templates.env.filters["when"] = lambda value: value.strftime("%Y-%m-%d %H:%M") if value else "-"
    templates.env.filters["band"] = result_band
    return templates


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    if app.state.settings.start_worker:
        app.state.jobs.start()
    yield
    app.state.jobs.stop()


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error_response(request: Request, status: int, reason: str) -> Response:
    if _is_api(request) or "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"detail": reason}, status_code=status)
    return render(request, "error.html", status_code=status, status=status, reason=reason)


def _install_handlers(app: FastAPI) -> None:
    async def known(request: Request, error: Exception) -> Response:
        if isinstance(error, AuthRequired) and not _is_api(request):
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        reason = _ERROR_TEXT.get(type(error)) or str(error)
        return _error_response(request, _ERROR_STATUS[type(error)], reason)

    async def rejected(request: Request, error: UploadRejected) -> Response:
        return _error_response(request, error.status_code, error.reason)

    async def refused(request: Request, error: LoginRefused) -> Response:
        response = _error_response(request, error.status_code, error.reason)
        response.headers["Retry-After"] = str(error.retry_after)
        return response

    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        return _error_response(request, error.status_code, str(error.detail))

    async def invalid(request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        reason = f"invalid request: {where + ': ' if where else ''}{first.get('msg', 'bad input')}"
        errors = [{key: item.get(key) for key in ("loc", "msg", "type")} for item in error.errors()]
        return JSONResponse({"detail": reason, "errors": errors}, status_code=422)

    for exception in _ERROR_STATUS:
        app.add_exception_handler(exception, known)
    app.add_exception_handler(UploadRejected, rejected)
    app.add_exception_handler(LoginRefused, refused)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)


def _install_middleware(app: FastAPI, settings: Settings) -> None:
    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        request.state.csp_nonce = secrets.token_urlsafe(16)
        length = request.headers.get("content-length", "")
        if (
            request.method == "POST"
            and request.url.path in _UPLOAD_PATHS
            and length.isdigit()
            and int(length) > settings.max_upload_bytes + 1_048_576
        ):
            reason = f"upload larger than the limit of {settings.max_upload_mb:.0f} MiB; ask an admin to raise it"
            response: Response = JSONResponse({"detail": reason}, status_code=413)
        else:
            response = await call_next(request)
        nonce = request.state.csp_nonce
        response.headers["Content-Security-Policy"] = (
            f"default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'nonce-{nonce}'; "
            f"script-src 'self' 'nonce-{nonce}'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        if request.url.path.startswith("/api/") or request.url.path.startswith("/studies"):
            response.headers.setdefault("Cache-Control", "no-store")
        # path only: query strings may hold search text (patient IDs) and never reach the log
        access_log.info(
            "%s %s %s %d %.0f ms user=%s",
            client_address(request),
            request.method,
            request.url.path,
            response.status_code,
            1000 * (time.perf_counter() - started),
            getattr(request.state, "username", "-"),
        )
        return response

    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.session_secret,
        session_cookie=SESSION_COOKIE,
        max_age=int(settings.session_hours * 3600),
        same_site="lax",
        https_only=settings.https_only,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application: database migrated, models registered, routers and UI mounted.

    Args:
        settings: Service settings (default: from ``MEDANOMALY_*`` environment variables).
    """
    from medanomaly.service.routers import (
        account,
        admin,
        admin_pages,
        api_docs,
        auth,
        health,
        login_locks,
        pages,
        reading,
        retrain,
        studies,
    )

    settings = settings or Settings()
    database = make_url(settings.database_url)
    sqlite_file = Path(database.database) if database.get_backend_name() == "sqlite" and database.database else None
    make_private(settings.data_dir, *([sqlite_file] if sqlite_file else []))
    clean_leftover_uploads(settings.data_dir)
    engine = make_engine(settings.database_url)
    migrate(engine)
    session_factory = make_session_factory(engine)
    store = ModelStore(settings.model_dirs, device=settings.device)
    with session_factory() as db:
        store.sync(db)
    app = FastAPI(
        title="medanomaly workstation",
        version=__version__,
        lifespan=_lifespan,
        description="Anomaly detection decision support: studies, results, opinions, reports.",
        dependencies=[Depends(csrf_protect)],
        docs_url=None,  # the CDN-based pages: served behind the log-in by routers/api_docs.py instead
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings, app.state.engine, app.state.session_factory = settings, engine, session_factory
    app.state.store, app.state.session_cookie, app.state.templates = store, SESSION_COOKIE, _templates()
    app.state.hasher = password_hasher(settings.password_time_cost, settings.password_memory_kib)
    app.state.login_guard = LoginGuard(settings, app.state.hasher)
    app.state.jobs = JobRunner(session_factory, store, settings)
    app.state.retraining = RetrainRunner(session_factory, store, settings)
    app.state.retraining.recover()
    _install_handlers(app)
    _install_middleware(app, settings)
    app.mount("/static", StaticFiles(directory=str(UI_DIR / "static")), name="static")
    for router in (health.router, auth.router, studies.router, admin.router, pages.router, admin_pages.router):
        app.include_router(router)
    for router in (account.router, login_locks.router, *([api_docs.router] if settings.api_docs else [])):
        app.include_router(router)
    app.include_router(reading.router)
    app.include_router(retrain.router)
    return app
