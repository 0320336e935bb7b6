"""ALAD: three discriminators with spectral norm, the feature-matching score, resuming both optimisers."""

from __future__ import annotations

import pytest
import torch

from medanomaly.data.synthetic import make_phantom_set
from medanomaly.detectors.alad import Alad, AladNet
from medanomaly.detectors.alad.network import adversarial_losses, feature_matching_score
from medanomaly.training import TrainConfig, Trainer

PARAMS = {"width": 4, "latent_dim": 8, "learning_rate": 1e-3}


def _trainer(**changes) -> Trainer:
    config = {"max_epochs": 2, "batch_size": 16, "progress": False, "patience": None, **changes}
    return Trainer(TrainConfig(**config))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.from_numpy(make_phantom_set(40, 0, size=32, seed=7)[0])


def _spectral(module: torch.nn.Module) -> list[str]:
    return [name for name, child in module.named_modules() if hasattr(child, "parametrizations")]


def test_discriminators_are_spectrally_normalised_and_the_bigan_is_not() -> None:
    network = AladNet(1, 32, width=4, latent_dim=8)
    for discriminator in (network.d_xz, network.d_xx, network.d_zz):
        assert _spectral(discriminator)
    assert not _spectral(network.encoder) and not _spectral(network.generator)
    assert not _spectral(AladNet(1, 32, width=4, latent_dim=8, spectral=False))


def test_feature_matching_score_is_l1_between_dxx_features() -> None:
    network = AladNet(1, 32, width=4, latent_dim=8).eval()
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        scores, reconstruction = feature_matching_score(network, images)
        real = network.d_xx.body.features(torch.cat([images, images], 1)).flatten(1)
        fake = network.d_xx.body.features(torch.cat([images, network(images)], 1)).flatten(1)
    torch.testing.assert_close(scores, (real - fake).abs().sum(dim=1))
    torch.testing.assert_close(reconstruction, network(images))


def test_discriminator_loss_does_not_reach_encoder_or_generator() -> None:
    network = AladNet(1, 32, width=4, latent_dim=8)
    d_loss, g_loss, _ = adversarial_losses(network, torch.rand(4, 1, 32, 32), torch.randn(4, 8))
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    d_loss.backward()
    assert all(p.grad is None for p in network.generator_parameters())
    assert all(p.grad is not None for p in network.discriminator_parameters())


def test_detector_scores_with_the_moving_average(images: torch.Tensor) -> None:
    detector = Alad(**PARAMS).fit(images, trainer=_trainer())
    prediction = detector.score(images[:4])
    with torch.no_grad():
        expected, reconstruction = feature_matching_score(detector.average_.network.eval(), images[:4])
    torch.testing.assert_close(prediction.scores, expected)
    torch.testing.assert_close(prediction.anomaly_maps, (images[:4] - reconstruction).abs().mean(dim=1))
    steps_per_epoch = 2  # 36 training images, full batches of 16
    assert int(detector.average_.steps) == (detector.history_.best_epoch + 1) * steps_per_epoch  # best epoch kept


def test_resume_restores_both_optimisers_and_matches_an_uninterrupted_run(images, tmp_path) -> None:
    straight = Alad(**PARAMS).fit(images, trainer=_trainer(max_epochs=3))
    Alad(**PARAMS).fit(images, trainer=_trainer(max_epochs=1, checkpoint_dir=str(tmp_path)))
    payload = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(payload["optimizers"]) == {"generator", "discriminator"}
    resumed = Alad(**PARAMS).fit(images, trainer=_trainer(max_epochs=3, checkpoint_dir=str(tmp_path)))
    assert resumed.history_.resumed_from_epoch == 1
    expected = straight.state_dict()
    for key, value in resumed.state_dict().items():
        torch.testing.assert_close(value, expected[key], msg=f"{key} differs after resuming")


def test_bad_ema_decay_fails_clearly(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="alad: ema_decay"):
        Alad(**PARAMS, ema_decay=-0.1).fit(images, trainer=_trainer())
