"""``medanomaly archive score dicomweb:QUERY``: studies found by a DICOMweb query of a real Orthanc, scored as files.

Rows must be what ``medanomaly score`` gives the same images, a rerun must neither score nor retrieve again, and a
study the PACS does not have is a failed row.
"""

from __future__ import annotations

import json

import pytest

from medanomaly.cli.main import main
from medanomaly.pacs.client import PacsClient

pa = pytest.importorskip("pyarrow", reason="archive scoring needs the 'scale' extra (pyarrow)")
pytestmark = pytest.mark.integration

from medanomaly.archive.store import Store  # noqa: E402


@pytest.fixture
def pacs_env(orthanc, tmp_path, monkeypatch) -> PacsClient:
    """The PACS configured as ``medanomaly pacs`` reads it (environment variables); a client to fill it."""
    settings = orthanc.settings(tmp_path / "pacs-work")
    for key, value in (("URL", settings.url), ("USER", settings.user), ("PASSWORD", settings.password)):
        monkeypatch.setenv(f"MEDANOMALY_PACS_{key}", str(value))
    return PacsClient(settings)


def _archive(source: str, model, out, capsys) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["archive", "score", source, "--model", str(model), "--out", str(out), "--json", "--no-progress"])
    return code, json.loads(capsys.readouterr().out)


def test_a_dicomweb_query_scores_the_studies_it_finds(
    pacs_env, pacs_model_dir, make_dx, make_ct, write_series, tmp_path, capsys
) -> None:
    studies = [make_dx(seed=21), make_dx(seed=22, lesion=False), make_ct(seed=23, n_slices=4)]
    for datasets in studies:
        pacs_env.store(datasets)
    uids = [str(datasets[0].StudyInstanceUID) for datasets in studies]
    out = tmp_path / "out"

    code, summary = _archive(f"dicomweb:study={','.join(uids)},1.2.3.4.999", pacs_model_dir, out, capsys)
    assert code == 1 and summary["written"] == 3  # the unknown study is a failed row
    rows = {r["path"]: r for r in Store(out).read().to_pylist()}
    assert rows["dicomweb:1.2.3.4.999"]["status"] == "failed" and "1.2.3.4.999" in rows["dicomweb:1.2.3.4.999"]["error"]
    for uid, datasets in zip(uids, studies, strict=True):
        series = out / "dicomweb" / uid / str(datasets[0].SeriesInstanceUID)
        path = str(series if len(datasets) > 1 else series / f"{datasets[0].SOPInstanceUID}.dcm")  # a CT whole
        local = write_series(datasets, tmp_path / "local" / uid)
        capsys.readouterr()
        main(["score", str(local if len(datasets) > 1 else next(local.iterdir())), "--model", str(pacs_model_dir),
              "--json"])  # fmt: skip
        printed = json.loads(capsys.readouterr().out)["results"][0]
        assert rows[path]["status"] == {"scored": "ok"}.get(printed["status"], printed["status"])
        assert rows[path]["decision"] == printed["label"] and rows[path]["n_images"] == len(datasets)
        if printed["score"] is not None:
            assert rows[path]["score"] == pytest.approx(printed["score"], rel=1e-6)

    retrieved = {p: p.stat().st_mtime_ns for p in (out / "dicomweb").rglob("*.dcm")}
    code, again = _archive(f"dicomweb:study={','.join(uids)}", pacs_model_dir, out, capsys)
    assert again["written"] == 0 and again["skipped"] == 4 and again["total"] == 4
    assert {p: p.stat().st_mtime_ns for p in (out / "dicomweb").rglob("*.dcm")} == retrieved  # not retrieved again


def test_a_dicomweb_search_by_modality_and_a_bad_query(pacs_env, pacs_model_dir, make_dx, tmp_path, capsys) -> None:
    datasets = make_dx(seed=31)
    pacs_env.store(datasets)
    code, summary = _archive("dicomweb:modality=DX&limit=1000", pacs_model_dir, tmp_path / "out", capsys)
    rows = Store(tmp_path / "out").read().to_pylist()
    found = [r for r in rows if str(datasets[0].StudyInstanceUID) in r["path"]]
    assert len(found) == 1 and found[0]["status"] in ("ok", "out_of_domain")
    assert {r["model"] for r in rows} == {"conv_ae"}
    assert main(["archive", "score", "dicomweb:modalty=DX", "--model", str(pacs_model_dir),
                 "--out", str(tmp_path / "bad")]) == 2  # fmt: skip
