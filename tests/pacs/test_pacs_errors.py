"""Errors say what happened: an untrusted TLS certificate, a wrong URL path and an unknown host each get their own
message, none of them rejects a queued result, and a CA bundle setting makes a private CA trusted."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from medanomaly.cli.main import main
from medanomaly.pacs.client import PacsClient, PacsConfigError
from medanomaly.pacs.outbox import Outbox
from medanomaly.pacs.settings import PacsSettings


class _EmptyQido(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def https_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A DICOMweb-looking HTTPS server on loopback with a self-signed certificate: (URL, certificate file)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EmptyQido)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/dicom-web", cert
    server.shutdown()


def test_untrusted_certificate_then_ca_bundle(https_pacs) -> None:
    url, cert = https_pacs
    with pytest.raises(PacsConfigError, match="untrusted TLS certificate .*self.signed.*set ca_bundle"):
        PacsClient(PacsSettings(url=url, retries=3)).ping()
    PacsClient(PacsSettings(url=url, ca_bundle=str(cert))).ping()  # trusted through the bundle


def test_unknown_host_has_its_own_message(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def resolve(host: str, *args: object, **kwargs: object) -> object:  # no DNS traffic leaves the machine
        if host == "pacs.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    waits: list[float] = []
    with pytest.raises(PacsConfigError, match="unknown host 'pacs.invalid'"):
        PacsClient(PacsSettings(url="http://pacs.invalid:8042/dicom-web", retries=3), sleep=waits.append).ping()
    assert waits == []  # not retried


def test_wrong_url_path_keeps_results_pending(orthanc, tmp_path, make_sr) -> None:
    wrong = PacsSettings(url=orthanc.url + "/dicomweb", user=orthanc.user, password=orthanc.password, workdir=tmp_path)
    with pytest.raises(PacsConfigError, match="HTTP 404 \\(nothing at this URL: wrong URL path"):
        PacsClient(wrong).ping()
    outbox = Outbox(wrong.outbox_dir)
    outbox.add(make_sr(generate_uid(), generate_uid()), "sr")
    flush = outbox.flush(PacsClient(wrong))
    assert flush.pending == 1 and flush.rejected == 0 and "URL path" in flush.error


def test_status_json_for_monitoring(tmp_path, dead_url, capsys) -> None:
    assert main(["pacs", "status", "--json", "--url", dead_url, "--retries", "1", "--workdir", str(tmp_path)]) == 1
    status = json.loads(capsys.readouterr().out)
    assert status["items"]["pending"] == 0 and status["pacs"]["answering"] is False
    assert "connection refused" in status["pacs"]["error"] and status["studies"] == {}
