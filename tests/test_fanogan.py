"""f-AnoGAN: WGAN-GP losses, the n_critic rhythm, the two training phases and resuming them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from medanomaly.data.synthetic import make_phantom_set
from medanomaly.detectors.fanogan import Fanogan, FanoganNet
from medanomaly.detectors.fanogan.network import critic_loss, izif_residual
from medanomaly.training import StepContext, TrainConfig, Trainer

PARAMS = {
    "width": 8,
    "latent_dim": 8,
    "n_critic": 2,
    "learning_rate": 1e-3,
    "encoder_learning_rate": 1e-3,
    "gan_steps": None,
}


def _config(**changes) -> TrainConfig:
    return TrainConfig(**{"max_epochs": 2, "batch_size": 16, "progress": False, "patience": None, **changes})


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.from_numpy(make_phantom_set(40, 0, size=32, seed=5)[0])


@pytest.fixture(scope="module")
def trained(images: torch.Tensor, tmp_path_factory: pytest.TempPathFactory) -> tuple[Fanogan, Path]:
    """Two epochs per phase, with checkpoints."""
    checkpoints = tmp_path_factory.mktemp("fanogan_ckpt")
    detector = Fanogan(**PARAMS).fit(images, trainer=Trainer(_config(checkpoint_dir=str(checkpoints))))
    return detector, checkpoints


def _generator_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in state.items() if key.startswith("generator.")}


def test_izif_residual_is_image_mse_plus_kappa_feature_mse() -> None:
    network = FanoganNet(1, 32, width=4, latent_dim=6).eval()
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        residual, reconstruction = izif_residual(network, images, kappa=2.5)
        expected_image = ((images - network(images)) ** 2).flatten(1).mean(1)
        real, fake = network.critic.features(images), network.critic.features(reconstruction)
        expected = expected_image + 2.5 * ((real - fake) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(residual, expected)
    assert (network.encode(images).abs() < 1).all()  # tanh: inside the U(-1, 1) prior's range


def test_critic_loss_is_negative_wasserstein_plus_penalty() -> None:
    critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    real, fake = torch.rand(4, 1, 4, 4), torch.rand(4, 1, 4, 4)
    loss, wasserstein = critic_loss(critic, real, fake, gp_weight=0.0)
    torch.testing.assert_close(wasserstein, critic(real).mean() - critic(fake).mean())
    torch.testing.assert_close(loss, -wasserstein)
    penalised, _ = critic_loss(critic, real, fake, gp_weight=10.0)
    assert penalised.item() >= loss.item()


def test_generator_steps_once_every_n_critic_steps() -> None:
    detector = Fanogan(width=4, latent_dim=4, n_critic=3)
    detector._build((1, 32, 32), {})
    detector.start_phase("gan")
    context = StepContext.for_optimizers(detector.configure_optimizers(), phase="gan")
    batch = [torch.rand(4, 1, 32, 32)]
    changed = []
    for _ in range(6):
        before = [p.detach().clone() for p in detector.network_.generator.parameters()]
        logs = detector.training_step(batch, context)
        after = list(detector.network_.generator.parameters())
        changed.append(any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)))
        assert ("generator_loss" in logs) == changed[-1]
    assert changed == [False, False, True, False, False, True]
    assert detector.counter_.value("critic_steps") == 6
    assert detector.counter_.value("generator_steps") == 2


def test_two_phases_freeze_the_gan_while_the_encoder_trains(trained) -> None:
    detector, checkpoints = trained
    history = detector.history_
    assert _epochs(history, "gan") == [0, 1]
    assert _epochs(history, "encoder") == [0, 1]
    assert history.phases["gan"]["monitor"] == "generator_steps"
    assert history.phases["encoder"]["monitor"] == "val_izif"
    assert "gan:" in history.stopped_because and "encoder:" in history.stopped_because
    after_gan = torch.load(checkpoints / "gan" / "last.pt", weights_only=True)["state"]["network"]
    final = detector.network_.state_dict()
    for key, value in _generator_state(after_gan).items():  # weights and batch-norm statistics
        torch.testing.assert_close(final[key], value)
    encoder_keys = [key for key in final if key.startswith("encoder.") and key.endswith("weight")]
    assert any(not torch.equal(final[key], after_gan[key]) for key in encoder_keys)


def test_score_is_izif_and_map_is_the_image_residual(trained, images: torch.Tensor) -> None:
    detector, _ = trained
    prediction = detector.score(images[:4])
    with torch.no_grad():
        residual, reconstruction = izif_residual(detector.network_.eval(), images[:4], detector.kappa)
    torch.testing.assert_close(prediction.scores, residual)
    torch.testing.assert_close(prediction.anomaly_maps, (images[:4] - reconstruction).abs().mean(1))


def test_resume_skips_the_finished_gan_and_continues_the_encoder(trained, images, tmp_path) -> None:
    detector, checkpoints = trained
    shutil.copytree(checkpoints, tmp_path / "ckpt")
    resumed = Fanogan(**PARAMS).fit(
        images, trainer=Trainer(_config(max_epochs=3, checkpoint_dir=str(tmp_path / "ckpt")))
    )
    history = resumed.history_
    assert _epochs(history, "gan") == [0, 1]
    assert _epochs(history, "encoder") == [0, 1, 2]
    assert history.phases["encoder"]["resumed_from_epoch"] == 2
    generator = _generator_state(resumed.network_.state_dict())
    for key, value in _generator_state(detector.network_.state_dict()).items():
        torch.testing.assert_close(generator[key], value)
    payload = torch.load(tmp_path / "ckpt" / "gan" / "last.pt", weights_only=True)
    assert set(payload["optimizers"]) == {"generator", "critic"}
    assert all(opt["state"] for opt in payload["optimizers"].values())


def test_gan_phase_is_counted_in_generator_steps(images: torch.Tensor) -> None:
    """36 training images at batch 16 are 2 critic steps per epoch: 3 generator steps of 2 critic steps = 3 epochs."""
    detector = Fanogan(**{**PARAMS, "gan_steps": 3}).fit(images, trainer=Trainer(_config(max_epochs=50)))
    history = detector.history_
    assert _epochs(history, "gan") == [0, 1, 2]
    assert detector.counter_.value("generator_steps") == 3
    assert history.phases["gan"]["stopped_because"] == "max_steps=6 reached (3 epochs)"
    assert history.phases["gan"]["converged"] is True


def test_time_budget_is_shared_by_both_phases(images: torch.Tensor) -> None:
    config = _config(max_epochs=50, max_minutes=0.002)
    detector = Fanogan(**PARAMS).fit(images, trainer=Trainer(config))
    assert detector.history_.stopped_because.count("time budget") == 2
    assert detector.history_.converged is False
    assert len(_epochs(detector.history_, "encoder")) >= 1


@pytest.mark.parametrize(
    ("shape", "params", "message"),
    [
        ((4, 1, 32, 48), {}, "fanogan needs square images"),
        ((4, 1, 40, 40), {}, "multiple of 16"),
        ((4, 1, 32, 32), {"n_critic": 0}, "n_critic"),
        ((4, 1, 32, 32), {"gan_steps": 0}, "gan_steps >= 1"),
    ],
)
def test_bad_inputs_fail_clearly(shape, params, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Fanogan(**{**PARAMS, **params}).fit(torch.rand(shape), trainer=Trainer(_config()))


def _epochs(history, phase: str) -> list[int]:
    """The epoch numbers of one phase in a merged two-phase history."""
    return [epoch["epoch"] for epoch in history.epochs if epoch["phase"] == phase]
