"""Shared GAN building blocks: stage plans, shapes, gradient penalty, spectral norm, weight averaging."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medanomaly.detectors.gan_blocks import (
    ConvDecoder,
    ConvEncoder,
    StepCounter,
    WeightAverage,
    feature_distance,
    gradient_penalty,
    residual_map,
    stage_plan,
)


@pytest.mark.parametrize(
    ("resolution", "channels", "side"),
    [
        (32, [8, 16, 32], 4),
        (48, [8, 16, 32, 64], 3),
        (64, [8, 16, 32, 64], 4),
        (224, [8, 16, 32, 64, 64], 7),
    ],
)
def test_stage_plan_halves_to_a_small_map_and_caps_width(resolution: int, channels: list[int], side: int) -> None:
    assert stage_plan(resolution, 8) == (channels, side)


@pytest.mark.parametrize("resolution", [8, 40, 50, 100])
def test_stage_plan_rejects_sides_not_multiple_of_16(resolution: int) -> None:
    with pytest.raises(ValueError, match="fanogan: the image side must be a multiple of 16"):
        stage_plan(resolution, 8, owner="fanogan")


@pytest.mark.parametrize(("channels", "resolution"), [(1, 32), (3, 48), (1, 224)])
def test_encoder_decoder_shapes_and_range(channels: int, resolution: int) -> None:
    encoder = ConvEncoder(channels, resolution, width=4, out_features=10)
    decoder = ConvDecoder(10, channels, resolution, width=4)
    images = torch.rand(2, channels, resolution, resolution)
    latent, features = encoder.forward_features(images)
    assert latent.shape == (2, 10)
    assert features.shape == (2, *encoder.feature_shape)
    output = decoder(latent)
    assert output.shape == images.shape
    assert output.min() >= 0 and output.max() <= 1


class _LinearCritic(nn.Module):
    """f(x) = <w, x>: its input gradient is w everywhere."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.flatten(1) * self.weight).sum(dim=1, keepdim=True)


def test_gradient_penalty_is_zero_for_a_1_lipschitz_linear_critic() -> None:
    weight = torch.randn(1 * 8 * 8)
    critic = _LinearCritic(weight / weight.norm())
    real, fake = torch.rand(6, 1, 8, 8), torch.rand(6, 1, 8, 8)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_grows_for_a_steep_critic_and_reaches_its_weights() -> None:
    weight = torch.randn(1 * 8 * 8)
    critic = _LinearCritic(5.0 * weight / weight.norm())
    penalty = gradient_penalty(critic, torch.rand(6, 1, 8, 8), torch.rand(6, 1, 8, 8))
    assert penalty.item() == pytest.approx(16.0, rel=1e-4)  # (||grad|| - 1)^2 = (5 - 1)^2
    penalty.backward()
    assert critic.weight.grad is not None and critic.weight.grad.abs().sum() > 0


def test_layer_norm_critic_scores_each_image_independently_of_its_batch() -> None:
    critic = ConvEncoder(1, 32, width=4, out_features=1, norm="layer").train()
    images = torch.rand(5, 1, 32, 32)
    torch.testing.assert_close(critic(images)[:1], critic(images[:1]))


def test_spectral_norm_keeps_the_largest_singular_value_near_one() -> None:
    encoder = ConvEncoder(1, 32, width=4, out_features=1, norm="none", spectral=True).train()
    with torch.no_grad():
        for _ in range(30):  # power iterations run once per training-mode forward pass
            encoder(torch.rand(2, 1, 32, 32))
    first = encoder.body[0]
    sigma = torch.linalg.matrix_norm(first.weight.detach().flatten(1), ord=2)
    assert sigma.item() == pytest.approx(1.0, abs=0.05)
    assert hasattr(first, "parametrizations")


def test_residual_map_and_feature_distance() -> None:
    images = torch.zeros(2, 3, 4, 4)
    reconstruction = torch.zeros(2, 3, 4, 4)
    reconstruction[1, 0] = 0.6
    maps = residual_map(images, reconstruction)
    assert maps.shape == (2, 4, 4)
    torch.testing.assert_close(maps[1], torch.full((4, 4), 0.2))
    torch.testing.assert_close(feature_distance(images, reconstruction, "l1"), torch.tensor([0.0, 0.2]))
    torch.testing.assert_close(feature_distance(images, reconstruction, "l2"), torch.tensor([0.0, 0.12]))


def test_step_counter_is_saved_state() -> None:
    counter = StepCounter("critic_steps", "generator_steps")
    assert [counter.increment("critic_steps") for _ in range(3)] == [1, 2, 3]
    assert counter.value("generator_steps") == 0
    restored = StepCounter("critic_steps", "generator_steps")
    restored.load_state_dict(counter.state_dict())
    assert restored.value("critic_steps") == 3


def test_weight_average_warms_up_then_lags_behind() -> None:
    network = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    average = WeightAverage(network)
    assert not any(p.requires_grad for p in average.parameters())
    with torch.no_grad():
        network[0].weight.fill_(1.0)
        network[1].running_mean.fill_(3.0)
    start = average.network[0].weight.clone()
    average.update(network, decay=0.999)  # first step: rate = 1 - 1/10
    torch.testing.assert_close(average.network[0].weight, start + 0.9 * (1.0 - start))
    torch.testing.assert_close(average.network[1].running_mean, torch.full((2,), 3.0))  # buffers are copied
    assert int(average.steps) == 1
    average.update(network, decay=0.0)  # decay 0 copies the source
    torch.testing.assert_close(average.network[0].weight, network[0].weight)


@pytest.mark.parametrize("name", ["fanogan", "ganomaly", "alad", "alocc"])
def test_gan_methods_train_without_a_validation_split(name: str) -> None:
    from medanomaly.registry import create
    from medanomaly.training import TrainConfig, Trainer

    config = TrainConfig(max_epochs=2, batch_size=8, val_fraction=0.0, progress=False, patience=None)
    epochs_bound = {"gan_steps": None} if name == "fanogan" else {}  # f-AnoGAN's GAN phase: max_epochs, not steps
    detector = create(name, width=4, latent_dim=4, **epochs_bound).fit(
        torch.rand(16, 1, 32, 32), trainer=Trainer(config)
    )
    history = detector.history_ if isinstance(detector.history_, dict) else detector.history_.to_dict()
    if name == "fanogan":  # two phases: the merged history tags each epoch with its phase
        assert list(history["phases"]) == ["gan", "encoder"]
        assert {epoch["phase"] for epoch in history["epochs"]} == {"gan", "encoder"}
    assert history["best_epoch"] in (0, 1)
    for epoch in history["epochs"]:
        losses = [value for key, value in epoch.items() if "loss" in key]
        assert losses and all(torch.isfinite(torch.tensor(losses)))
