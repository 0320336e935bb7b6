"""``medanomaly demo --serve``: the demo's phantom studies and model in a fresh workstation, ready to click through."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

DEMO_USERS = {"radiologist": ("demo-radiologist", "radiologist"), "admin": ("demo-admin", "admin")}


def _volume(out: Path, size: int) -> Path:
    """A 16-slice phantom volume with a nodule on the middle slices, as NIfTI."""
    import nibabel as nib

    from medanomaly.data.synthetic import make_phantom_volume

    volume, _ = make_phantom_volume(np.random.default_rng(7), n_slices=16, size=size, lesion=True)
    path = out / "phantom_volume.nii.gz"
    nib.save(nib.Nifti1Image(volume.transpose(1, 2, 0).astype(np.float32), np.eye(4)), path)
    return path


def prepare_demo(out: Path, model_dir: Path, studies: list[Path], size: int = 64):
    """Create ``out/workstation`` afresh with the demo users and the given studies queued; returns the app."""
    from medanomaly.service.app import create_app
    from medanomaly.service.db import User
    from medanomaly.service.security import hash_password
    from medanomaly.service.settings import Settings
    from medanomaly.service.studies import create_study

    data_dir = out / "workstation"
    shutil.rmtree(data_dir, ignore_errors=True)
    app = create_app(Settings(data_dir=data_dir, model_dirs=(f"phantom={model_dir}",), start_worker=True))
    with app.state.session_factory() as db:
        users = {}
        for name, (password, role) in DEMO_USERS.items():
            users[name] = User(username=name, role=role, password_hash=hash_password(app.state.hasher, password))
            db.add(users[name])
        db.commit()
        for path in [*studies, _volume(out, size)]:
            with path.open("rb") as handle:
                create_study(db, app.state.settings, app.state.store, app.state.jobs, users["radiologist"], handle,
                             path.name)
    return app


def serve_demo(out: Path, model_dir: Path, studies: list[Path], *, host: str = "127.0.0.1", port: int = 8000,
               size: int = 64) -> int:
    """Prepare the demo workstation, print the URL and logins, serve until interrupted."""
    import uvicorn

    app = prepare_demo(out, model_dir, studies, size)
    print(f"\nworkstation: http://{host}:{port}/   (data: {out / 'workstation'})")
    for name, (password, role) in DEMO_USERS.items():
        print(f"  log in as {name} / {password}  ({role})")
    print("  the phantom studies are being scored now; press Ctrl+C to stop")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")
    return 0
