"""GANomaly: the latent score, the loss weights, the moving average and resuming both optimisers."""

from __future__ import annotations

import pytest
import torch

from medanomaly.data.synthetic import make_phantom_set
from medanomaly.detectors.ganomaly import Ganomaly, GanomalyNet
from medanomaly.detectors.ganomaly.network import discriminator_loss, generator_losses, latent_score
from medanomaly.training import TrainConfig, Trainer

PARAMS = {"width": 8, "latent_dim": 8, "learning_rate": 1e-3}


def _trainer(**changes) -> Trainer:
    config = {"max_epochs": 2, "batch_size": 16, "progress": False, "patience": None, **changes}
    return Trainer(TrainConfig(**config))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.from_numpy(make_phantom_set(40, 0, size=32, seed=6)[0])


@pytest.fixture(scope="module")
def fitted(images: torch.Tensor) -> Ganomaly:
    return Ganomaly(**PARAMS).fit(images, trainer=_trainer())


def test_latent_score_is_the_norm_of_the_latent_difference() -> None:
    network = GanomalyNet(1, 32, width=4, latent_dim=5).eval()
    with torch.no_grad():
        output = network(torch.rand(3, 1, 32, 32))
    expected = torch.sqrt(((output.latent - output.latent_hat) ** 2).sum(dim=1))
    torch.testing.assert_close(latent_score(output), expected)
    assert output.latent.shape == output.latent_hat.shape == (3, 5)


def test_detector_scores_latent_distance_and_maps_the_residual(fitted: Ganomaly, images: torch.Tensor) -> None:
    prediction = fitted.score(images[:5])
    with torch.no_grad():
        output = fitted.average_.network.eval()(images[:5])
    torch.testing.assert_close(prediction.scores, torch.linalg.vector_norm(output.latent - output.latent_hat, dim=1))
    torch.testing.assert_close(prediction.anomaly_maps, (images[:5] - output.reconstruction).abs().mean(dim=1))


def test_generator_loss_weights_default_to_1_50_1() -> None:
    detector = Ganomaly()
    assert (detector.adversarial_weight, detector.contextual_weight, detector.latent_weight) == (1.0, 50.0, 1.0)
    network = GanomalyNet(1, 32, width=4, latent_dim=5)
    images = torch.rand(4, 1, 32, 32)
    losses = generator_losses(network, images, network(images), (1.0, 50.0, 1.0))
    expected = losses["adversarial"] + 50 * losses["contextual"] + losses["latent"]
    torch.testing.assert_close(losses["loss"], expected)
    torch.testing.assert_close(losses["contextual"], (images - network(images).reconstruction).abs().mean())


def test_discriminator_loss_does_not_reach_the_generator() -> None:
    network = GanomalyNet(1, 32, width=4, latent_dim=5)
    images = torch.rand(4, 1, 32, 32)
    loss = discriminator_loss(network.discriminator, images, network(images).reconstruction)
    loss.backward()
    assert all(p.grad is None for p in network.generator_parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in network.discriminator.parameters())


def test_zero_decay_scores_with_the_trained_weights(images: torch.Tensor) -> None:
    detector = Ganomaly(**PARAMS, ema_decay=0.0).fit(images, trainer=_trainer(max_epochs=1))
    average = detector.average_.network.state_dict()
    for key, value in detector.network_.state_dict().items():
        torch.testing.assert_close(average[key], value)


def test_resume_restores_both_optimisers_and_matches_an_uninterrupted_run(images, tmp_path) -> None:
    straight = Ganomaly(**PARAMS).fit(images, trainer=_trainer(max_epochs=4))
    Ganomaly(**PARAMS).fit(images, trainer=_trainer(max_epochs=2, checkpoint_dir=str(tmp_path)))
    payload = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(payload["optimizers"]) == {"generator", "discriminator"}
    assert all(opt["state"] for opt in payload["optimizers"].values())
    resumed = Ganomaly(**PARAMS).fit(images, trainer=_trainer(max_epochs=4, checkpoint_dir=str(tmp_path)))
    assert resumed.history_.resumed_from_epoch == 2
    expected = straight.state_dict()
    for key, value in resumed.state_dict().items():
        torch.testing.assert_close(value, expected[key], msg=f"{key} differs after resuming")


def test_bad_ema_decay_fails_clearly(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="ema_decay"):
        Ganomaly(**PARAMS, ema_decay=1.0).fit(images, trainer=_trainer())
