"""Helpers of the workstation tests (imported by their conftest and test modules; a unique module name, so that
``tests/pacs/conftest.py`` can never shadow it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medanomaly.data.synthetic import make_phantom

PASSWORDS = {"admin": "admin-pass-1", "rad": "rad-pass-123"}


def make_settings(data_dir: Path, model_dirs: tuple[str, ...], **changes: Any):
    """Settings for tests: cheap Argon2, no background worker unless asked."""
    from medanomaly.service.settings import Settings

    values = {
        "data_dir": data_dir,
        "model_dirs": model_dirs,
        "start_worker": False,
        "password_time_cost": 1,
        "password_memory_kib": 1024,
        "poll_seconds": 0.2,
        **changes,
    }
    return Settings(**values)


def add_users(app: Any) -> None:
    """Create ``admin`` (admin) and ``rad`` (radiologist)."""
    from medanomaly.service.db import User
    from medanomaly.service.security import hash_password

    with app.state.session_factory() as db:
        for name, role in (("admin", "admin"), ("rad", "radiologist")):
            db.add(User(username=name, role=role, password_hash=hash_password(app.state.hasher, PASSWORDS[name])))
        db.commit()


@dataclass
class Session:
    """A logged-in test client and its CSRF token."""

    client: Any  # fastapi.testclient.TestClient
    csrf: str

    def post(self, url: str, **kwargs: Any) -> Any:
        """POST with the CSRF header."""
        headers = {"X-CSRF-Token": self.csrf, **kwargs.pop("headers", {})}
        return self.client.post(url, headers=headers, **kwargs)

    def upload(self, path: Path, name: str | None = None, **kwargs: Any) -> Any:
        """POST a file to /api/studies."""
        files = {"file": (name or path.name, path.read_bytes(), "application/octet-stream")}
        return self.post("/api/studies", files=files, **kwargs)


def login(app: Any, username: str = "rad") -> Session:
    """A TestClient logged in through the JSON API."""
    from fastapi.testclient import TestClient

    client = TestClient(app)
    response = client.post("/api/auth/login", json={"username": username, "password": PASSWORDS[username]})
    assert response.status_code == 200, response.text
    return Session(client, response.json()["csrf_token"])


def phantom_png(path: Path, *, lesion: bool, size: int = 32, seed: int = 0, radius=(0.05, 0.09)) -> Path:
    """Write one phantom PNG (8 bit)."""
    image, _ = make_phantom(np.random.default_rng(seed), size, lesion=lesion, lesion_radius=radius)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)
    return path


def label_studies(app: Any, tmp_path: Path, n_per_class: int) -> list[int]:
    """Upload ``n_per_class`` normal and lesion phantoms, score them, and label each as a radiologist would."""
    rad = login(app, "rad")
    ids = []
    for index in range(2 * n_per_class):
        lesion = index % 2 == 1
        path = phantom_png(tmp_path / "up" / f"case{index}.png", lesion=lesion, seed=40 + index, radius=(0.1, 0.13))
        ids.append(rad.upload(path).json()["id"])
    app.state.jobs.run_pending()
    wait_scored(rad, ids)
    for index, study_id in enumerate(ids):
        label = "LESION" if index % 2 else "NORMAL"
        abnormal = rad.client.get(f"/api/studies/{study_id}/result").json()["abnormal"]
        response = rad.post(f"/api/studies/{study_id}/opinions", json={"agrees": abnormal == (label != "NORMAL"),
                                                                       "label": label})
        assert response.status_code == 201
    return ids


def wait_scored(session: Session, ids: list[int], timeout: float = 120.0) -> None:
    """Wait until the studies are scored (a running worker may still hold the last one); AssertionError else."""
    import time

    deadline = time.monotonic() + timeout
    for study_id in ids:
        while (status := session.client.get(f"/api/studies/{study_id}").json()["status"]) in ("queued", "scoring"):
            assert time.monotonic() < deadline, f"study {study_id} still {status}"
            time.sleep(0.1)
