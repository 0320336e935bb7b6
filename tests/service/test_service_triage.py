"""Triage: the rule-out point for a target sensitivity, three bands, and the worklist's priority order."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the workstation tests need the 'service' extra")

from service_helpers import label_studies, login, phantom_png

from medanomaly.service.db import ModelVersion, Opinion, Result, Study, utcnow
from medanomaly.service.triage import band_of, by_priority, fit_triage

RANK = {"flagged": 0, "review": 1, "likely_normal": 2}


def test_rule_out_point_keeps_the_target_sensitivity_on_held_out_cases() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0] * 40 + [1] * 40)
    scores = np.concatenate([rng.normal(0.0, 1.0, 40), rng.normal(2.5, 1.0, 40)])
    triage = fit_triage(labels, scores, threshold=1.5, target=0.95, folds=5)
    assert triage["rule_out"] < triage["threshold"] == 1.5 and triage["n_cases"] == 80
    in_sample = np.mean(scores[labels == 1] > triage["rule_out"])
    assert in_sample >= 0.95  # the cut fitted on all cases reaches the target on them
    point = triage["rule_out_point"]
    assert point["n_folds"] == 5 and point["n_normal"] == 40 and point["n_abnormal"] == 40
    assert 0.8 <= point["sensitivity"] <= 1.0 and 0.0 < point["specificity"] < 1.0  # held out: near, not exact
    bands = triage["bands"]
    assert sum(b["normal"] + b["abnormal"] for b in bands.values()) == 80
    assert bands["likely_normal"]["abnormal"] <= 2 and bands["flagged"]["abnormal"] > bands["flagged"]["normal"]
    assert triage["flag_point"]["sensitivity"] == pytest.approx(np.mean(scores[labels == 1] > 1.5))


def test_rule_out_never_above_the_threshold() -> None:
    labels, scores = np.array([0, 0, 0, 1, 1, 1]), np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    triage = fit_triage(labels, scores, threshold=0.05, target=0.5, folds=3)
    assert triage["rule_out"] == 0.05 and triage["bands"]["review"] == {"normal": 0, "abnormal": 0}


def test_bands() -> None:
    assert band_of(0.9, 0.5, 0.2) == "flagged"
    assert band_of(0.5, 0.5, 0.2) == "review"
    assert band_of(0.2, 0.5, 0.2) == "likely_normal"
    assert band_of(0.1, 0.5, None) == "review"  # without a rule-out point nothing is called likely normal


def _study(study_id: int, minutes_ago: float, score: float | None, *, read: bool = False, scored: bool = True):
    version = ModelVersion(name="m", version=1, triage={"rule_out": 0.2})
    study = Study(id=study_id, created_at=utcnow() - dt.timedelta(minutes=minutes_ago))
    if scored:
        result = Result(id=study_id, score=score, threshold=0.5, model_version=version)
        study.results.append(result)
        if read:
            study.opinions.append(Opinion(result_id=result.id))
    return study


def test_priority_order() -> None:
    studies = [
        _study(1, 5, 0.1),  # likely normal
        _study(2, 5, 0.9),  # flagged
        _study(3, 5, 0.3),  # review
        _study(4, 300, 0.05),  # likely normal but waiting 300 min: rises to the top
        _study(5, 5, 0.95, read=True),  # read: last
        _study(6, 5, None, scored=False),  # no result yet
        _study(7, 5, 0.7),  # flagged, lower score
        _study(8, 5, None),  # out of domain: review, first of its band
        _study(9, 400, 0.1),  # overdue, older
    ]
    order = [s.id for s in by_priority(studies, max_wait_minutes=240)]
    assert order == [9, 4, 2, 7, 8, 3, 1, 6, 5]


def test_worklist_bands_and_priority(app_factory, tmp_path) -> None:
    app = app_factory(recalibration_min_per_class=3, recalibration_folds=3, triage_sensitivity=0.9)
    labelled = label_studies(app, tmp_path, 4)
    admin, rad = login(app, "admin"), login(app, "rad")
    version = admin.post("/api/models/chest/recalibrate", json={"method": "keep"}).json()
    triage = version["triage"]
    assert triage["target_sensitivity"] == 0.9 and triage["n_cases"] == 8
    assert triage["threshold"] == pytest.approx(version["threshold"]) and triage["rule_out"] <= triage["threshold"]
    assert admin.post("/api/models/chest/versions/2/activate", json={"accept_drop": True}).status_code == 200
    fresh = []
    for index in range(6):
        path = phantom_png(tmp_path / "new" / f"n{index}.png", lesion=index % 2 == 0, seed=70 + index)
        fresh.append(rad.upload(path).json()["id"])
    app.state.jobs.run_pending()
    with app.state.session_factory() as db:  # the first new study has waited a day
        db.get(Study, fresh[0]).created_at = utcnow() - dt.timedelta(days=1)
        db.commit()

    rows = rad.client.get("/api/studies?sort=priority").json()
    assert [r["id"] for r in rows][0] == fresh[0] and rows[0]["overdue"] is True
    assert not any(r["overdue"] for r in rows[1:])
    unread = [r for r in rows[1:] if r["id"] in fresh]
    assert [r["id"] for r in rows[1:len(fresh)]] == [r["id"] for r in unread]  # read studies come last
    assert all(r["triage_band"] in RANK for r in unread)
    keys = [(RANK[r["triage_band"]], -r["score"]) for r in unread]
    assert keys == sorted(keys)
    for r in unread:  # the band follows the cuts of the version that scored it
        expected = band_of(r["score"], triage["threshold"], triage["rule_out"])
        assert r["model_version"] == 2 and r["triage_band"] == expected
    assert {r["id"] for r in rows[len(fresh):]} == set(labelled)

    page = rad.client.get("/?sort=priority").text
    assert 'id="triage-panel"' in page and "sorted by priority" in page and "overdue" in page
    assert f"Measured on {triage['rule_out_point']['n_normal']} normal + 4 abnormal" in page
    assert page.index(f'data-study="{fresh[0]}"') < page.index(f'data-study="{labelled[0]}"')
    study_page = rad.client.get(f"/studies/{fresh[1]}").text
    band = next(r["triage_band"] for r in rows if r["id"] == fresh[1])
    assert 'id="triage-band"' in study_page and f"band-{band}" in study_page and "held out, on " in study_page
