"""ALOCC: the score 1 - D(R(x)) in [0, 1], the denoising reconstructor, resuming both optimisers."""

from __future__ import annotations

import pytest
import torch

from medanomaly.data.synthetic import make_phantom_set
from medanomaly.detectors.alocc import Alocc, AloccNet
from medanomaly.detectors.alocc.detector import equilibrium_warning
from medanomaly.detectors.alocc.network import alocc_losses, alocc_score, discriminator_loss
from medanomaly.model import Model
from medanomaly.training import StepContext, TrainConfig, Trainer
from medanomaly.transforms import Preprocessing
from medanomaly.types import Prediction

PARAMS = {"width": 8, "latent_dim": 8, "learning_rate": 1e-3}


def _trainer(**changes) -> Trainer:
    config = {"max_epochs": 2, "batch_size": 16, "progress": False, "patience": None, **changes}
    return Trainer(TrainConfig(**config))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.from_numpy(make_phantom_set(40, 0, size=32, seed=8)[0])


@pytest.fixture(scope="module")
def fitted(images: torch.Tensor) -> Alocc:
    return Alocc(**PARAMS).fit(images, trainer=_trainer())


def test_score_is_one_minus_d_of_r_and_within_unit_interval() -> None:
    network = AloccNet(1, 32, width=4, latent_dim=6).eval()
    images = torch.rand(5, 1, 32, 32)
    with torch.no_grad():
        scores, refined = alocc_score(network, images)
        expected = 1.0 - network.probability_real(network(images))
    torch.testing.assert_close(scores, expected)
    torch.testing.assert_close(refined, network(images))
    assert scores.shape == (5,)
    assert (scores >= 0).all() and (scores <= 1).all()


def test_fitted_detector_scores_within_unit_interval_and_maps_the_residual(fitted: Alocc, images) -> None:
    odd = torch.cat([images[:4], torch.ones(2, 1, 32, 32), torch.zeros(2, 1, 32, 32)])
    prediction = fitted.score(odd)
    assert (prediction.scores >= 0).all() and (prediction.scores <= 1).all()
    with torch.no_grad():
        refined = fitted.average_.network.eval()(odd)
    torch.testing.assert_close(prediction.anomaly_maps, (odd - refined).abs().mean(dim=1))


def test_reconstructor_loss_combines_adversarial_and_weighted_reconstruction() -> None:
    network = AloccNet(1, 32, width=4, latent_dim=6)
    images = torch.rand(4, 1, 32, 32)
    noisy = images + 0.1 * torch.randn_like(images)
    refined, losses = alocc_losses(network, images, noisy, reconstruction_weight=7.0, reconstruction_loss="l2")
    torch.testing.assert_close(losses["loss"], losses["adversarial"] + 7.0 * losses["reconstruction"])
    torch.testing.assert_close(losses["reconstruction"], ((images - refined) ** 2).mean())
    d_loss = discriminator_loss(network, images, refined)
    d_loss.backward()
    assert all(p.grad is None for p in network.reconstructor.parameters())


def test_discriminator_output_does_not_depend_on_the_batch() -> None:
    network = AloccNet(1, 32, width=4, latent_dim=6)  # layer norm in D: train and eval mode agree
    images = torch.rand(4, 1, 32, 32)
    train_mode = network.train().probability_real(images)
    torch.testing.assert_close(network.eval().probability_real(images), train_mode)


def test_training_noise_follows_noise_std(images: torch.Tensor) -> None:
    seen: list[torch.Tensor] = []
    detector = Alocc(**PARAMS, noise_std=0.2)
    detector._build((1, 32, 32), {})
    context = StepContext.for_optimizers(detector.configure_optimizers())
    reconstructor = detector.network_.reconstructor
    handle = reconstructor.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    detector.training_step([images[:16]], context)
    handle.remove()
    assert (seen[0] - images[:16]).std().item() == pytest.approx(0.2, rel=0.1)


def test_resume_restores_both_optimisers_and_matches_an_uninterrupted_run(images, tmp_path) -> None:
    straight = Alocc(**PARAMS).fit(images, trainer=_trainer(max_epochs=3))
    Alocc(**PARAMS).fit(images, trainer=_trainer(max_epochs=1, checkpoint_dir=str(tmp_path)))
    payload = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(payload["optimizers"]) == {"reconstructor", "discriminator"}
    resumed = Alocc(**PARAMS).fit(images, trainer=_trainer(max_epochs=3, checkpoint_dir=str(tmp_path)))
    assert resumed.history_.resumed_from_epoch == 1
    expected = straight.state_dict()
    for key, value in resumed.state_dict().items():
        torch.testing.assert_close(value, expected[key], msg=f"{key} differs after resuming")


@pytest.mark.parametrize(
    "params", [{"reconstruction_loss": "huber"}, {"noise_std": -0.1}, {"discriminator_norm": "group"}]
)
def test_bad_hyper_parameters_fail_clearly(images: torch.Tensor, params: dict) -> None:
    with pytest.raises(ValueError, match="alocc: need"):
        Alocc(**PARAMS, **params).fit(images, trainer=_trainer())


def test_equilibrium_warning_only_when_every_normal_scores_near_one_half() -> None:
    settled = 0.5 + 0.01 * torch.randn(200, generator=torch.Generator().manual_seed(0))
    assert "GAN equilibrium" in equilibrium_warning(settled)
    assert equilibrium_warning(torch.linspace(0.1, 0.9, 200)) is None  # D still tells images apart
    assert equilibrium_warning(torch.full((200,), 0.02)) is None  # confident "real" for every normal: not settled


def test_fit_warns_when_the_discriminator_settled(images, monkeypatch, tmp_path) -> None:
    half = lambda self, batch: Prediction(scores=torch.full((len(batch),), 0.5), anomaly_maps=batch[:, 0])  # noqa: E731
    monkeypatch.setattr(Alocc, "_score_batch", half)
    detector = Alocc(**PARAMS).fit(images, trainer=_trainer(max_epochs=1))
    assert len(detector.warnings_) == 1 and "near chance" in detector.warnings_[0]
    Model(detector, Preprocessing(resolution=32)).save(tmp_path / "alocc")
    assert Model.load(tmp_path / "alocc", device="cpu").detector.warnings_ == detector.warnings_  # kept with it
