"""The reader contract under fuzzing: a short seeded run of bench/fuzz_readers.py, in CI on every test run."""

from __future__ import annotations

import importlib.util
import logging
import sys
import warnings
from pathlib import Path

import pytest

from medanomaly.io import read_study

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


@pytest.fixture(scope="module")
def fuzz():
    return _load("fuzz_readers")


def test_every_seed_reads_cleanly(tmp_path):
    seeds = _load("fuzz_seeds").write_seeds(tmp_path)
    assert len(seeds) >= 30
    for seed in seeds:
        assert read_study(seed).pixels.size > 0, seed


def test_input_is_a_pure_function_of_seed_and_index(fuzz, tmp_path):
    seeds = sorted(p for p in _load("fuzz_seeds").write_seeds(tmp_path / "seeds"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = (fuzz.make_input(seeds, 3, 41, tmp_path / name) for name in ("a", "b"))
    read = (lambda p: sorted(f.read_bytes() for f in p.iterdir())) if first.is_dir() else (lambda p: p.read_bytes())
    assert read(first) == read(second)


def test_short_seeded_campaign_has_no_contract_violation(fuzz):
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            summary = fuzz.campaign(2000, seed=20261205, workers=0, chunk=500)
    finally:
        logging.disable(logging.NOTSET)
    assert summary["inputs"] == 2000
    assert summary["crashes"] == 0, summary["signatures"]
    assert summary["over_memory"] == 0 and summary["slow"] == 0, summary
    assert summary["read"] > 100 and summary["input_errors"] > 100  # both sides of the contract are exercised
