"""Modality presets from DICOM headers, filled in only where the user left defaults; per-method CLI defaults."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from skimage.io import imsave

from medanomaly.cli.options import (
    add_preprocessing_arguments,
    add_training_arguments,
    preprocessing_from,
    train_config_from,
)
from medanomaly.detectors.conv_ae import ConvAutoencoder
from medanomaly.registry import detector_class
from medanomaly.transforms import Preprocessing
from medanomaly.transforms.presets import PRESETS, apply_preset, choose_preset, get_preset, preset_from_header


def _no_foreground(alpha: float = 1.0) -> None:
    """A method factory without a ``foreground`` hyper-parameter."""


@pytest.mark.parametrize(
    ("meta", "name"),
    [
        ({"modality": "CT", "body_part": "HEAD"}, "head_ct"),
        ({"modality": "CT", "body_part": "CHEST"}, "chest_ct"),
        ({"modality": "CT", "body_part": "ABDOMEN"}, "abdomen_ct"),
        ({"modality": "CT", "body_part": None}, "ct"),
        ({"modality": "MR", "body_part": "BRAIN"}, "brain_mri"),
        ({"modality": "MR", "body_part": "KNEE"}, "mri"),
        ({"modality": "DX", "body_part": "CHEST"}, "chest_xray"),
        ({"modality": None}, "generic"),
    ],
)
def test_preset_from_header(meta, name) -> None:
    assert preset_from_header(meta).name == name


def test_preset_fills_only_what_the_user_left_at_its_default() -> None:
    preset = PRESETS["head_ct"]
    preprocessing, params = apply_preset(preset, Preprocessing(), {}, ConvAutoencoder)
    assert (preprocessing.normalize, preprocessing.window, params) == ("window", "brain", {"foreground": "outline"})
    given = Preprocessing(window="40,400")
    assert apply_preset(preset, given, {"foreground": "none"}, ConvAutoencoder) == (given, {"foreground": "none"})
    assert apply_preset(preset, Preprocessing(), {}, _no_foreground)[1] == {}


def test_choose_preset_by_name_or_header(tmp_path) -> None:
    png = tmp_path / "a.png"
    imsave(png, np.zeros((8, 8), np.uint8), check_contrast=False)
    assert choose_preset("auto", png) == (PRESETS["generic"], "default (no DICOM header)")
    assert choose_preset("brain_mri", png) == (PRESETS["brain_mri"], "cli")
    with pytest.raises(ValueError, match="available"):
        get_preset("ultrasound_of_the_moon")


def test_cli_uses_the_methods_resolution_and_schedule_unless_given() -> None:
    parser = argparse.ArgumentParser()
    add_preprocessing_arguments(parser)
    add_training_arguments(parser)
    args = parser.parse_args([])
    assert preprocessing_from(args, "conv_ae").resolution == ConvAutoencoder.default_resolution
    assert preprocessing_from(args).resolution == 128
    config = train_config_from(args, "conv_ae")
    assert config.max_epochs == ConvAutoencoder.default_train["max_epochs"]
    assert config.patience == ConvAutoencoder.default_train["patience"]
    assert config.min_delta == 0.0  # conv_ae counts any fall of its validation loss
    assert train_config_from(args, "alad").min_delta == detector_class("alad").default_train["min_delta"] > 0
    given = parser.parse_args(["--resolution", "32", "--epochs", "3", "--patience", "0"])
    assert preprocessing_from(given, "conv_ae").resolution == 32
    assert (train_config_from(given, "conv_ae").max_epochs, train_config_from(given, "conv_ae").patience) == (3, None)
