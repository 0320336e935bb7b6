"""The API description for logged-in users: ``/openapi.json`` and a plain page at ``/docs`` (no scripts, no CDN).

FastAPI's own ``/docs`` and ``/redoc`` pages load their scripts from a CDN, which the workstation's content
security policy blocks (and a hospital network may not reach), and they are public; they are turned off in
:func:`medanomaly.service.app.create_app` and this router serves the description behind the log-in instead.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from medanomaly.service.deps import UserDep, render

router = APIRouter(include_in_schema=False)
_METHODS = ("get", "post", "put", "patch", "delete")


@router.get("/openapi.json")
def openapi_json(request: Request, user: UserDep) -> JSONResponse:
    """The OpenAPI 3 description of the JSON API."""
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def docs_page(request: Request, user: UserDep) -> Response:
    """Every API operation with its summary, parameters and description, rendered on the server."""
    schema = request.app.openapi()
    operations: list[dict[str, Any]] = []
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            operations.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "tag": (operation.get("tags") or ["other"])[0],
                    "summary": operation.get("summary", ""),
                    "description": operation.get("description", ""),
                    "parameters": [p["name"] for p in operation.get("parameters", [])],
                    "body": _body_name(operation),
                }
            )
    operations.sort(key=lambda op: (op["tag"], op["path"], op["method"]))
    return render(request, "api_docs.html", user=user, operations=operations, info=schema.get("info", {}))


def _body_name(operation: dict[str, Any]) -> str | None:
    content = operation.get("requestBody", {}).get("content", {})
    for media, spec in content.items():
        ref = spec.get("schema", {}).get("$ref", "")
        return f"{media}: {ref.rsplit('/', 1)[-1]}" if ref else media
    return None
