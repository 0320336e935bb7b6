"""PACS settings (file -> environment -> flags) and the client's retry policy against a port nobody listens on."""

from __future__ import annotations

from pathlib import Path

import pytest

from medanomaly.pacs.client import PacsClient, PacsError, PacsUnavailableError
from medanomaly.pacs.settings import PacsSettings, load_settings


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "pacs.toml"
    path.write_text('[pacs]\nurl = "http://file/dicom-web"\nuser = "filer"\nretries = 2\nmodalities = ["ct", "MR"]\n')
    environ = {"MEDANOMALY_PACS_USER": "envuser", "MEDANOMALY_PACS_PASSWORD": "s3cret"}
    settings = load_settings(path, environ=environ, retries=5, url=None)
    assert settings.url == "http://file/dicom-web"  # a None flag does not override
    assert settings.user == "envuser" and settings.password == "s3cret"
    assert settings.retries == 5 and settings.modalities == ("CT", "MR")
    assert "s3cret" not in repr(settings)


def test_yaml_file_named_by_environment_and_workdir_paths(tmp_path: Path) -> None:
    path = tmp_path / "pacs.yaml"
    path.write_text(f"url: http://yaml/dicom-web\nworkdir: {tmp_path / 'w'}\nkeep_downloads: yes\n")
    settings = load_settings(environ={"MEDANOMALY_PACS_SETTINGS": str(path), "MEDANOMALY_PACS_TIMEOUT": "3"})
    assert settings.url == "http://yaml/dicom-web" and settings.timeout == 3.0 and settings.keep_downloads
    assert settings.outbox_dir == tmp_path / "w" / "outbox"


def test_bad_settings_are_named(tmp_path: Path) -> None:
    path = tmp_path / "pacs.toml"
    path.write_text('url = "x"\npasword = "typo"\n')
    with pytest.raises(ValueError, match=r"pacs.toml: unknown PACS settings \['pasword'\]"):
        load_settings(path, environ={})
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        load_settings(tmp_path / "missing.toml", environ={})
    with pytest.raises(ValueError, match="retries must be at least 1"):
        PacsSettings(retries=0)


def test_backoff_doubles_and_is_bounded() -> None:
    assert PacsSettings(retries=5, backoff=0.5, backoff_max=1.5).backoff_delays() == [0.5, 1.0, 1.5, 1.5]
    assert PacsSettings(retries=1).backoff_delays() == []


def test_unconfigured_pacs_says_what_to_set() -> None:
    with pytest.raises(PacsError, match="MEDANOMALY_PACS_URL"):
        PacsClient(PacsSettings(url=""))


def test_unreachable_pacs_is_retried_with_backoff_then_reported(tmp_path: Path, dead_url: str) -> None:
    waits: list[float] = []
    settings = PacsSettings(url=dead_url, retries=3, backoff=0.01, timeout=2, workdir=tmp_path)
    with pytest.raises(PacsUnavailableError, match=r"failed after 3 attempt\(s\) \(connection refused") as caught:
        PacsClient(settings, sleep=waits.append).search_studies()
    assert waits == [0.01, 0.02]
    assert "pacs push --pending" in str(caught.value)
