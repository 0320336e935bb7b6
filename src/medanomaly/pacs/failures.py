"""What went wrong talking to the PACS, told apart: down (retry), misconfigured (keep pending), refused (final).

A PACS that cannot be reached or answers 408/429/5xx is *unavailable*: requests are retried, results stay queued.
A wrong password (401), a missing permission (403), a wrong URL path (404), an untrusted TLS certificate or an
unknown host is a *configuration* error: not retried, results stay queued until the setting is fixed. Only the
PACS refusing the request itself (400, 409, a STOW-RS failure for an instance) is final.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from medanomaly.errors import MedanomalyError

if TYPE_CHECKING:
    from medanomaly.pacs.settings import PacsSettings

TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


class PacsError(MedanomalyError):
    """The PACS refused a request (authentication, unknown study, rejected instance) or is misconfigured."""


class PacsUnavailableError(PacsError):
    """The PACS could not be reached (or kept failing) after every retry; results stay queued."""


class PacsConfigError(PacsError):
    """The link is misconfigured (credentials, permission, URL path, TLS certificate, host): results stay queued.

    The PACS never judged the data itself, so nothing is rejected; items go out once the setting is fixed.
    """


#: HTTP statuses that say the link is misconfigured (not that an object is bad).
_CONFIG_STATUS = {
    401: "wrong user or password: check MEDANOMALY_PACS_USER / MEDANOMALY_PACS_PASSWORD",
    403: "the PACS user lacks the permission",
    405: "the URL does not accept this request: check the DICOMweb root path in MEDANOMALY_PACS_URL",
    407: "the proxy wants credentials",
}


class TrustAdapter(requests.adapters.HTTPAdapter):
    """Verifies HTTPS with the given CA bundle (``session.verify`` alone loses to REQUESTS_CA_BUNDLE)."""

    def __init__(self, ca_bundle: str) -> None:
        super().__init__()
        self.ca_bundle = ca_bundle

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """Send with ``verify`` set to the bundle."""
        kwargs["verify"] = self.ca_bundle
        return super().send(request, **kwargs)


def _root_level(what: str) -> bool:
    """True for requests on the DICOMweb root (a 404 there means a wrong URL path, not an unknown study)."""
    return what.startswith(("search studies", "store "))


def _innermost(error: BaseException) -> str:
    """The deepest cause's message (e.g. ``certificate verify failed: self-signed certificate``)."""
    while error.__context__ is not None or error.__cause__ is not None:
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    text = str(error)
    return text[text.find("certificate verify failed") :] if "certificate verify failed" in text else text[:200]


_RESOLVE_FAILURES = ("Name or service not known", "Failed to resolve", "nodename nor servname", "getaddrinfo failed")


def _unknown_host(error: BaseException) -> bool:
    """True when the connection failed because the host name does not resolve."""
    return any(text in str(error) for text in _RESOLVE_FAILURES)


def failure_reason(settings: PacsSettings, what: str, error: requests.RequestException) -> str:
    """Short reason of a transient failure; raises at once when retrying cannot help.

    Raises:
        PacsConfigError: Credentials, permission, URL path, TLS certificate or host name are wrong.
        PacsError: The PACS refused the request itself (e.g. HTTP 400, 409: a bad object).
    """
    response = getattr(error, "response", None)
    prefix = f"PACS {settings.url}: {what}"
    if isinstance(error, requests.HTTPError) and response is not None:
        status = response.status_code
        if status in TRANSIENT_STATUS:
            return f"HTTP {status}"
        if status in _CONFIG_STATUS or status == 404:
            why = _CONFIG_STATUS.get(status) or (
                "nothing at this URL: wrong URL path; MEDANOMALY_PACS_URL must be the DICOMweb root, "
                "e.g. http://HOST:8042/dicom-web"
                if _root_level(what)
                else "not found: the study/series is gone, or the URL path is wrong"
            )
            raise PacsConfigError(f"{prefix} refused with HTTP {status} ({why})") from None
        raise PacsError(f"{prefix} refused with HTTP {status} ({response.reason})") from None
    if isinstance(error, requests.exceptions.SSLError):
        msg = (
            f"{prefix} failed: untrusted TLS certificate ({_innermost(error)}); set ca_bundle "
            "(MEDANOMALY_PACS_CA_BUNDLE) to the CA file that signed the PACS's certificate"
        )
        raise PacsConfigError(msg) from None
    if isinstance(error, requests.Timeout):
        return f"no answer within {settings.timeout:g} s"
    if _unknown_host(error):
        host = urlsplit(settings.url).hostname
        raise PacsConfigError(f"{prefix} failed: unknown host {host!r} (DNS cannot resolve it); check the URL")
    return "connection refused or host unreachable"
