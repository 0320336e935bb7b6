"""The registry imports a method only when it is used; no dependency reconfigures logging."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medanomaly.registry import BUILTIN, available, detector_class

_LOADED = (
    "import sys; print(' '.join(sorted(m for m in sys.modules if m == 'niapy' or m.startswith('niapy.')"
    " or (m.startswith('medanomaly.detectors.') and m != 'medanomaly.detectors.base'))))"
)


def _modules_after(code: str) -> list[str]:
    """Detector modules and niapy modules a fresh interpreter holds after running ``code``."""
    done = subprocess.run([sys.executable, "-c", f"{code}\n{_LOADED}"], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_cli_parser_imports_no_method() -> None:
    assert _modules_after("from medanomaly.cli.main import build_parser; build_parser()") == []


def test_service_start_imports_no_method(tmp_path) -> None:
    pytest.importorskip("fastapi")
    code = (
        "from medanomaly.service.app import create_app; from medanomaly.service.settings import Settings;"
        f"create_app(Settings(data_dir={str(tmp_path)!r}, start_worker=False))"
    )
    assert _modules_after(code) == []


def test_one_method_imports_only_its_module() -> None:
    loaded = _modules_after("from medanomaly.registry import create; create('conv_ae')")
    others = tuple(module for name, module in BUILTIN.items() if name != "conv_ae")
    assert BUILTIN["conv_ae"] in loaded
    assert not [name for name in loaded if name.startswith(others)]


def test_importing_niapy_method_leaves_root_logger_alone() -> None:
    code = (
        "import logging; root = logging.getLogger(); before = (list(root.handlers), root.level)\n"
        "from medanomaly.registry import detector_class; detector_class('firefly_svm')\n"
        "assert (list(root.handlers), root.level) == before, (root.handlers, root.level)"
    )
    assert "niapy" in _modules_after(code)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_each_builtin_name_registers_its_class(name: str) -> None:
    assert name in available()
    assert detector_class(name).name == name


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="conv_ae"):
        detector_class("no_such_method")
