"""Optional ONNX Runtime path for feature extraction on a CPU (``pip install 'medanomaly[fast]'``).

On a 2-core CPU ONNX Runtime runs EfficientNet-Lite0 several times faster than eager PyTorch (depthwise
convolutions are where eager loses most). The network up to the deepest requested layer is exported once per
(backbone weights, layers, input size) and cached as a file under ``$MEDANOMALY_CACHE/onnx`` (default
``~/.cache/medanomaly/onnx``); sessions use one intra-op thread per core with spinning turned off, so idle ORT
threads do not steal the cores from the torch work around them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medanomaly.features.backbone import Backbone

logger = logging.getLogger(__name__)
CACHE_ENV = "MEDANOMALY_CACHE"


def onnxruntime_available() -> bool:
    """True when ``onnxruntime`` and ``onnx`` (needed to export) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def cache_dir() -> Path:
    """Folder for exported ONNX graphs: ``$MEDANOMALY_CACHE/onnx`` or ``~/.cache/medanomaly/onnx``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "medanomaly"
    return Path(root).expanduser() / "onnx"


class _Trunk(nn.Module):
    """Normalisation + the backbone up to its deepest requested layer: what gets exported."""

    mean: Tensor  # buffers, registered in __init__
    std: Tensor

    def __init__(self, backbone: Backbone, layers: Sequence[str], mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.backbone, self.layers = backbone, list(layers)
        self.register_buffer("mean", mean.detach().clone().contiguous())
        self.register_buffer("std", std.detach().clone().contiguous())

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.backbone.forward_features((x - self.mean) / self.std, self.layers))


def _session_options() -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def export_trunk(trunk: nn.Module, path: Path, input_shape: tuple[int, int, int], n_outputs: int) -> Path:
    """Export ``trunk`` for (batch, *input_shape) float32 inputs to ``path`` (atomically; batch axis dynamic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    outputs = [f"f{i}" for i in range(n_outputs)]
    example = torch.zeros(1, *input_shape)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(handle)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes, this call only
            torch.onnx.export(
                trunk.eval(), (example,), tmp_name, dynamo=False, opset_version=17, input_names=["x"],
                output_names=outputs, dynamic_axes={"x": {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
            )  # fmt: skip
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    logger.info("exported feature trunk to %s", path)
    return path


class OnnxRunner:
    """Runs an exported trunk with ONNX Runtime; called with (N, 3, H, W) float32 CPU tensors in [0, 1].

    Args:
        path: The ``.onnx`` file (exported by :func:`export_trunk`).
    """

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        self.path = path
        self.session = ort.InferenceSession(str(path), _session_options(), providers=["CPUExecutionProvider"])

    def __call__(self, x: Tensor) -> list[Tensor]:
        """One (N, C_i, H_i, W_i) float32 tensor per exported layer."""
        array = x.detach().to(torch.float32).contiguous().numpy()
        return [torch.from_numpy(output) for output in self.session.run(None, {"x": array})]


def build_runner(
    backbone: Backbone, layers: Sequence[str], mean: Tensor, std: Tensor, input_shape: tuple[int, int, int], key: str
) -> OnnxRunner:
    """Load the cached graph for ``key`` and ``input_shape`` = (3, H, W), exporting it first if needed."""
    channels, height, width = input_shape
    path = cache_dir() / f"{key}-{'+'.join(layers)}-{channels}x{height}x{width}.onnx"
    if not path.is_file():
        export_trunk(_Trunk(backbone, layers, mean, std), path, input_shape, len(layers))
    try:
        return OnnxRunner(path)
    except Exception:  # noqa: BLE001 (a truncated or stale cache file: export again once)
        logger.warning("cached ONNX graph %s unreadable; exporting it again", path)
        export_trunk(_Trunk(backbone, layers, mean, std), path, input_shape, len(layers))
        return OnnxRunner(path)
