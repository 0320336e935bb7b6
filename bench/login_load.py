"""Load test of the workstation's log-in protection, on loopback only (issue 14).

    python bench/login_load.py                     # tiny phantom model, real Argon2 costs, prints a JSON summary
    python bench/login_load.py --out login.json    # also writes it

Starts ``medanomaly serve`` on 127.0.0.1 with a fresh data folder and its default settings (Argon2id 64 MiB, two
password checks at a time), creates two users with ``medanomaly users add``, then measures:

1. the time of a wrong log-in for a known and for an unknown user name (3 each, before any throttling);
2. 100 wrong log-ins sent at once while ``/api/health`` is probed every 50 ms, twice: from 100 loopback addresses
   with 100 user names (no throttle applies: the bound on password checks must hold), then from 127.0.0.1 over 10
   user names, one of them real (the throttle answers); the status codes, how long each burst took, and the
   probe's p50/p95/max latency;
3. 50 uploads sent at once by a logged-in radiologist (session made before the burst), all of which must be
   accepted, with the health probe running again, and the time until all 50 are scored.

Bounded: every request has a timeout, at most 100 client threads, the server is stopped at the end. Exit status 1
when the targets are missed (health p95 >= 200 ms during the burst, or any upload refused).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import requests
from PIL import Image

HOST = "127.0.0.1"
PASSWORDS = {"benchadmin": "bench-admin-pass-77", "benchrad": "bench-rad-pass-88"}
TIMEOUT = 120.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _train_tiny_model(root: Path) -> Path:
    """A conv_ae trained for a few epochs on 60 normal 32 px phantoms (what the service tests use)."""
    from medanomaly.data.synthetic import write_phantom_dataset
    from medanomaly.fitting import FitOptions, train_model
    from medanomaly.model import Postprocessing
    from medanomaly.training import TrainConfig
    from medanomaly.transforms import Preprocessing

    data = write_phantom_dataset(root / "phantoms", n_train=60, n_test_normal=4, n_test_abnormal=4, size=32, seed=0)
    options = FitOptions(
        params={"depth": 3, "width": 8, "latent_dim": 16, "learning_rate": 5e-3},
        preprocessing=Preprocessing(resolution=32, normalize="minmax"),
        postprocessing=Postprocessing(median_size=3, score_from="map_topk"),
        train=TrainConfig(max_epochs=6, batch_size=8, progress=False, patience=None),
        random_state=0,
    )
    out = root / "model" / "chest"
    train_model(data, "conv_ae", out, options)
    return out


def _cli() -> list[str]:
    return [str(Path(sys.executable).with_name("medanomaly"))]


def _add_users(data_dir: Path) -> None:
    for name, password in PASSWORDS.items():
        admin = ["--admin"] if name == "benchadmin" else []
        command = [*_cli(), "users", "add", name, *admin, "--password-stdin", "--data-dir", str(data_dir)]
        subprocess.run(command, input=password + "\n", text=True, check=True, capture_output=True, timeout=120)


def _start_server(data_dir: Path, model: Path, port: int, log: Path) -> subprocess.Popen:
    command = [*_cli(), "serve", "--data-dir", str(data_dir), "--model", f"chest={model}", "--host", HOST]
    handle = log.open("w")
    server = subprocess.Popen([*command, "--port", str(port)], stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if requests.get(f"http://{HOST}:{port}/api/health", timeout=5).status_code == 200:
                return server
        except requests.RequestException:
            time.sleep(0.5)
    server.terminate()
    server.wait(30)
    tail = log.read_text()[-3000:]
    raise RuntimeError(f"the server did not start (exit status {server.returncode}); its log ends:\n{tail}")


def _login(base: str, name: str) -> requests.Session:
    client = requests.Session()
    response = client.post(f"{base}/api/auth/login", json={"username": name, "password": PASSWORDS[name]}, timeout=30)
    response.raise_for_status()
    client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
    return client


class HealthProbe:
    """Requests ``/api/health`` every ``period`` seconds in a thread and keeps the latencies (ms)."""

    def __init__(self, base: str, period: float = 0.05) -> None:
        self.base, self.period, self.latencies, self.errors = base, period, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with requests.Session() as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get(f"{self.base}/api/health", timeout=30).status_code == 200
                except requests.RequestException:
                    ok = False
                self.latencies.append(1000 * (time.perf_counter() - started))
                self.errors += not ok
                self._stop.wait(self.period)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def summary(self) -> dict[str, Any]:
        """Count, errors, p50/p95/max in ms."""
        values = sorted(self.latencies)
        p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))] if values else None
        return {
            "probes": len(values),
            "errors": self.errors,
            "p50_ms": round(statistics.median(values), 1) if values else None,
            "p95_ms": round(p95, 1) if p95 is not None else None,
            "max_ms": round(values[-1], 1) if values else None,
        }


def _wrong_login(base: str, name: str, source: str = HOST) -> tuple[int, float]:
    """POST a wrong password for ``name`` from the loopback address ``source``; (status, ms)."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection(HOST, urlsplit(base).port, timeout=TIMEOUT, source_address=(source, 0))
    try:
        body = json.dumps({"username": name, "password": "not-the-password"})
        connection.request("POST", "/api/auth/login", body=body, headers={"Content-Type": "application/json"})
        status = connection.getresponse().status
    finally:
        connection.close()
    return status, 1000 * (time.perf_counter() - started)


def _at_once(count: int, job: Callable[[int], Any]) -> tuple[list[Any], float]:
    """Run ``job(i)`` for i < count on ``count`` threads released together; (results, wall seconds)."""
    barrier = threading.Barrier(count)

    def run(index: int) -> Any:
        barrier.wait()
        return job(index)

    started = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(run, range(count)))
    return results, time.perf_counter() - started


def _timing(base: str) -> dict[str, float]:
    known = [_wrong_login(base, "benchrad")[1] for _ in range(3)]
    unknown = [_wrong_login(base, f"ghost{i}")[1] for i in range(3)]
    return {"known_wrong_ms": round(statistics.median(known), 1), "unknown_ms": round(statistics.median(unknown), 1)}


def _burst(base: str, count: int, spread: bool) -> dict[str, Any]:
    """``count`` wrong log-ins at once with the health probe running.

    ``spread``: each from its own loopback address (127.0.0.2, ...) with its own unknown user name, so that no
    throttle applies and every one needs a password check; else all from 127.0.0.1 over 10 names (one real).
    """
    names = ["benchrad"] + [f"intruder{i}" for i in range(9)]

    def attempt(i: int) -> tuple[int, float]:
        if spread:
            return _wrong_login(base, f"visitor{i}", f"127.0.{(i + 2) // 250}.{(i + 2) % 250}")
        return _wrong_login(base, names[i % len(names)])

    with HealthProbe(base) as probe:
        time.sleep(0.5)
        results, wall = _at_once(count, attempt)
        time.sleep(0.5)
    statuses: dict[str, int] = {}
    for status, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    slowest = max(ms for _, ms in results)
    return {
        "logins": count,
        "statuses": statuses,
        "wall_s": round(wall, 2),
        "slowest_login_ms": round(slowest, 1),
        "health": probe.summary(),
    }


def _phantom_png(seed: int) -> bytes:
    from medanomaly.data.synthetic import make_phantom

    image, _ = make_phantom(np.random.default_rng(seed), 32, lesion=seed % 2 == 1)
    buffer = io.BytesIO()
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _uploads(base: str, rad: requests.Session, count: int) -> dict[str, Any]:
    files = [_phantom_png(seed) for seed in range(count)]
    cookies, csrf = rad.cookies.get_dict(), rad.headers["X-CSRF-Token"]

    def upload(index: int) -> int:
        file = {"file": (f"bench_{index:03d}.png", files[index], "image/png")}
        headers = {"X-CSRF-Token": csrf}
        reply = requests.post(f"{base}/api/studies", files=file, cookies=cookies, headers=headers, timeout=TIMEOUT)
        return reply.status_code

    with HealthProbe(base) as probe:
        statuses, wall = _at_once(count, upload)
    accepted = statuses.count(201)
    started, done = time.perf_counter(), 0
    while time.perf_counter() - started < 300:
        rows = rad.get(f"{base}/api/studies", params={"limit": 500}, timeout=30).json()
        done = sum(1 for row in rows if row.get("status") in ("done", "failed"))
        if done >= accepted:
            break
        time.sleep(1)
    return {
        "uploads": count,
        "accepted": accepted,
        "statuses": sorted(set(statuses)),
        "wall_s": round(wall, 2),
        "scored": done,
        "scored_within_s": round(time.perf_counter() - started + wall, 1),
        "health": probe.summary(),
    }


def run(work: Path, logins: int, uploads: int) -> dict[str, Any]:
    """The three measurements against a fresh server in ``work``."""
    model = _train_tiny_model(work)
    data_dir = work / "data"
    _add_users(data_dir)
    port = _free_port()
    base = f"http://{HOST}:{port}"
    server = _start_server(data_dir, model, port, work / "server.log")
    try:
        rad, admin = _login(base, "benchrad"), _login(base, "benchadmin")
        result: dict[str, Any] = {"timing": _timing(base)}
        result["burst_many_addresses"] = _burst(base, logins, spread=True)
        result["burst_one_address"] = _burst(base, logins, spread=False)
        result["uploads"] = _uploads(base, rad, uploads)
        locks = admin.get(f"{base}/api/login-locks", timeout=30).json()
        result["locked_after_burst"] = sorted(f"{row['kind']}:{row['key']}" for row in locks if row["locked"])
    finally:
        server.terminate()
        server.wait(30)
    log = (work / "server.log").read_text()
    result["access_log_lines"] = sum("medanomaly.access" in line for line in log.splitlines())
    result["failed_login_log_lines"] = sum("failed log-in:" in line for line in log.splitlines())
    return result


def main() -> int:
    """Run, print the JSON summary (and write it with --out); exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=100, help="wrong log-ins sent at once (default 100)")
    parser.add_argument("--uploads", type=int, default=50, help="uploads sent at once (default 50)")
    parser.add_argument("--out", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args()
    if not 1 <= args.logins <= 100 or not 1 <= args.uploads <= 100:
        parser.error("--logins and --uploads must be between 1 and 100")
    load_before = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="login-load-") as folder:
        result = run(Path(folder), args.logins, args.uploads)
    result["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_before": load_before,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    bursts = [result[key]["health"]["p95_ms"] for key in ("burst_many_addresses", "burst_one_address")]
    ok = max(bursts) < 200 and result["uploads"]["accepted"] == args.uploads
    print("targets met" if ok else "TARGETS MISSED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
