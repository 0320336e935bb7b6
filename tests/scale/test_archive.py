"""``medanomaly archive score``: rows equal to ``medanomaly score``, resumable, and the same rows on a 2-node Ray."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

pa = pytest.importorskip("pyarrow")

from medanomaly.archive.local import load_model, local_engine  # noqa: E402
from medanomaly.archive.run import ArchiveJob, run_archive  # noqa: E402
from medanomaly.archive.store import Store  # noqa: E402
from medanomaly.cli.main import main  # noqa: E402

VOLATILE = ("seconds",)  # wall time differs between runs; every other column must match


@pytest.fixture(scope="module")
def archive(phantom_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 phantom PNGs in nested folders, 3 DICOM CT images, a truncated DICOM and a PNG that is not one."""
    root = tmp_path_factory.mktemp("archive")
    pngs = [png for split in ("test", "val", "train") for png in sorted((phantom_dataset / split).rglob("*.png"))]
    for index, png in enumerate(pngs[:40]):
        target = root / f"site{index % 3}" / png.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(png, target)
    good = Path(get_testdata_file("CT_small.dcm")).read_bytes()  # pydicom's bundled 128 px CT slice
    for index in range(3):
        (root / "dicom" / f"ct{index}").mkdir(parents=True)
        (root / "dicom" / f"ct{index}" / "CT_small.dcm").write_bytes(good)
    (root / "corrupt").mkdir()
    (root / "corrupt" / "truncated.dcm").write_bytes(good[: len(good) // 2])
    (root / "site0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


def _stable(error: str | None) -> str | None:
    """An error without the object addresses PIL puts in its messages (``<_io.BytesIO object at 0x7f..>``)."""
    return None if error is None else re.sub(r" at 0x[0-9a-f]+", "", error)


def _rows(out: Path) -> list[dict]:
    rows = [{**r, "error": _stable(r["error"])} for r in Store(out).read().to_pylist()]
    return sorted(({k: v for k, v in r.items() if k not in VOLATILE} for r in rows), key=lambda r: r["path"])


def _run(archive: Path, model_dir: Path, out: Path, engine=None, part_size: int = 8) -> dict:
    job = ArchiveJob(str(archive), str(model_dir), str(out), part_size=part_size)
    model = load_model(str(model_dir))
    return run_archive(job, engine or local_engine(model), (model.method, model.version), progress=False)


@pytest.fixture(scope="module")
def local_rows(archive: Path, trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("local") / "rows"
    assert main(["archive", "score", str(archive), "--model", str(trained_model_dir), "--out", str(out),
                 "--part-size", "8", "--no-progress"]) == 1  # two inputs failed
    return _rows(out)


def test_rows_are_what_score_prints(archive, trained_model_dir, local_rows, capsys) -> None:
    capsys.readouterr()
    assert main(["score", str(archive), "--model", str(trained_model_dir), "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    by_path = {r["path"]: r for r in local_rows}
    assert len(local_rows) == 45 == len(printed["results"]) + len(printed["failures"])
    for result in printed["results"]:
        row = by_path[result["path"]]
        assert row["status"] == {"scored": "ok"}.get(result["status"], result["status"])
        assert row["decision"] == result["label"] and row["abnormal"] == result["abnormal"]
        assert row["score"] == (None if result["score"] is None else pytest.approx(result["score"], rel=1e-5))
        assert row["domain_reason"] == result["domain_reason"]
        assert row["threshold"] == pytest.approx(result["threshold"])
        assert (row["model"], row["model_version"]) == (printed["model"]["method"], printed["model"]["version"])
    failed = {r["path"]: r["error"] for r in local_rows if r["status"] == "failed"}
    assert failed == {f["path"]: _stable(f["error"]) for f in printed["failures"]}
    assert {Path(p).name for p in failed} == {"truncated.dcm", "broken.png"}
    assert all(error for error in failed.values())
    assert sum(r["status"] in ("ok", "out_of_domain") for r in local_rows) == 43


def test_a_killed_run_resumes_without_duplicates_or_gaps(archive, trained_model_dir, local_rows, tmp_path) -> None:
    model = load_model(str(trained_model_dir))

    def killed_after_two_parts(job, chunks, labels) -> Iterator:
        for index, table in enumerate(local_engine(model)(job, chunks, labels)):
            if index == 2:
                raise KeyboardInterrupt  # the part being scored is lost, the written ones stay
            yield table

    with pytest.raises(KeyboardInterrupt):
        _run(archive, trained_model_dir, tmp_path / "out", engine=killed_after_two_parts)
    first = _rows(tmp_path / "out")
    assert 0 < len(first) < len(local_rows)
    summary = _run(archive, trained_model_dir, tmp_path / "out")
    assert summary["skipped"] == len(first)
    assert summary["written"] == len(local_rows) - len(first)
    resumed = _rows(tmp_path / "out")
    assert len({r["path"] for r in resumed}) == len(resumed)
    assert resumed == local_rows
    again = _run(archive, trained_model_dir, tmp_path / "out")
    assert again["written"] == 0 and again["total"] == len(local_rows)


def test_a_manifest_scores_its_paths_with_their_labels(archive, trained_model_dir, local_rows, tmp_path) -> None:
    pngs = sorted(archive.rglob("*.png"))[:3]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},L{i}\n" for i, p in enumerate(pngs)) + "missing.png\n")
    _run(manifest, trained_model_dir, tmp_path / "out")
    rows = {r["path"]: r for r in _rows(tmp_path / "out")}
    expected = {r["path"]: r for r in local_rows}
    for index, png in enumerate(pngs):
        assert rows[str(png)] == {**expected[str(png)], "label": f"L{index}"}
    assert rows[str(tmp_path / "missing.png")]["status"] == "failed"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_two_node_ray_cluster_gives_the_local_rows(archive, trained_model_dir, local_rows, tmp_path, ray_cluster):
    from medanomaly.archive.ray_engine import ray_engine

    summary = _run(archive, trained_model_dir, tmp_path / "out", engine=ray_engine(workers=2))
    assert summary["written"] == len(local_rows)
    rows = _rows(tmp_path / "out")
    assert [r["path"] for r in rows] == [r["path"] for r in local_rows]
    for row, expected in zip(rows, local_rows, strict=True):
        assert {**row, "score": None} == {**expected, "score": None}
        if expected["score"] is not None:
            assert row["score"] == pytest.approx(expected["score"], rel=1e-5)


@pytest.fixture(scope="module")
def large_archive(phantom_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 200 studies: every phantom PNG (156), 40 DICOM CT folders and 4 corrupt files."""
    root = tmp_path_factory.mktemp("large_archive")
    (root / "png").mkdir()
    for png in sorted(p for p in phantom_dataset.rglob("*.png") if "masks" not in p.parts):
        shutil.copy(png, root / "png" / png.name)
    good = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    for index in range(40):
        (root / f"ct{index:02d}").mkdir()
        (root / f"ct{index:02d}" / "CT_small.dcm").write_bytes(good)
    for index in range(2):
        (root / f"bad{index}").mkdir()
        (root / f"bad{index}" / "truncated.dcm").write_bytes(good[: len(good) // (index + 2)])
        (root / "png" / f"broken{index}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png" * (index + 1))
    return root


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_worker_node_lost_mid_run_loses_no_study(large_archive, trained_model_dir, tmp_path, ray_cluster) -> None:
    from medanomaly.archive.ray_engine import ray_engine

    _run(large_archive, trained_model_dir, tmp_path / "local", part_size=8)
    expected = _rows(tmp_path / "local")
    assert len(expected) == 200
    lost = []

    def a_node_dies_after_the_first_part(job, chunks, labels) -> Iterator:
        for index, table in enumerate(ray_engine(workers=2)(job, chunks, labels)):
            if index == 1:
                ray_cluster.lose_worker()  # its actor and reading tasks die mid-chunk; nothing replaces the node
                lost.append(index)
            yield table

    try:
        summary = _run(large_archive, trained_model_dir, tmp_path / "ray", engine=a_node_dies_after_the_first_part,
                       part_size=8)  # fmt: skip
        restarted = [a["ActorClassName"] for a in ray_cluster.ray._private.state.actors().values() if a["NumRestarts"]]
    finally:
        if lost:
            ray_cluster.replace_worker()  # the next tests get two nodes again
    assert lost == [1]
    # The autoscaling pool may have no scoring actor on the lost node (an idle machine finishes chunks fast): then only
    # reading tasks died there and were retried. When an actor did die, it is the scorer alone (reading not fused in).
    assert set(restarted) <= {"MapWorker(MapBatches(ChunkScorer))"}
    rows = _rows(tmp_path / "ray")
    assert summary["written"] == len(rows) == len({r["path"] for r in rows}) == 200  # each study exactly once
    assert [r["path"] for r in rows] == [r["path"] for r in expected]
    for row, want in zip(rows, expected, strict=True):
        assert {**row, "score": None} == {**want, "score": None}
        if want["score"] is not None:
            assert row["score"] == pytest.approx(want["score"], rel=1e-5)
