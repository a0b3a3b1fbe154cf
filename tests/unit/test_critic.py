"""Critics: patch-map output shapes, spectral norm on the convolutions, the registry, and that they can learn."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from decrappify.errors import ConfigError
from decrappify.nn.critic import CRITICS, PatchCritic, UnetCritic, create_critic
from decrappify.nn.layers import SelfAttention
from decrappify.train.losses import AdversarialLoss, critic_accuracy


def _spectral(module: nn.Module) -> bool:
    """Whether `module.weight` is computed by torch's spectral-norm parametrization."""
    if not parametrize.is_parametrized(module, "weight"):
        return False
    return any("SpectralNorm" in type(p).__name__ for p in module.parametrizations.weight)


@pytest.mark.parametrize(("size", "expected"), [(64, (2, 1, 1, 1)), (96, (2, 1, 3, 3)), (128, (2, 1, 5, 5))])
def test_patch_critic_gives_fastai_patch_map(size: int, expected: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    critic = PatchCritic(width=8)
    assert critic(torch.rand(2, 3, size, size)).shape == expected


def test_every_patch_critic_convolution_is_spectrally_normalised() -> None:
    critic = PatchCritic(width=8)
    convs = [m for m in critic.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 2 + 3 + 3 + 1  # first, residual block, 3 strided, attention q/k/v, head
    assert all(_spectral(m) for m in convs)
    assert sum(isinstance(m, SelfAttention) for m in critic.modules()) == 1
    assert sum(isinstance(m, nn.Dropout2d) for m in critic.modules()) == 4


def test_spectral_norm_bounds_each_layer() -> None:
    """After power iterations, the effective weight's top singular value is 1 whatever the raw scale."""
    torch.manual_seed(0)
    critic = PatchCritic(width=8)
    conv = critic.layers[0][0]
    with torch.no_grad():
        conv.parametrizations.weight.original.mul_(50.0)
    critic.train()
    for _ in range(30):  # each training-mode forward runs one power iteration
        critic(torch.rand(1, 3, 64, 64))
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
    assert sigma == pytest.approx(1.0, abs=0.05)


def test_unet_critic_gives_one_logit_per_pixel_with_spectral_norm() -> None:
    torch.manual_seed(0)
    critic = UnetCritic(width=4)
    assert critic(torch.rand(2, 3, 32, 48)).shape == (2, 1, 32, 48)
    assert all(_spectral(getattr(critic, f"conv{i}")) for i in range(1, 9))
    assert not _spectral(critic.conv0) and not _spectral(critic.conv9)  # as Real-ESRGAN


def test_sizes_the_critics_cannot_take_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 64"):
        PatchCritic(width=4)(torch.rand(1, 3, 48, 80))
    with pytest.raises(ValueError, match="multiples of 8"):
        UnetCritic(width=4)(torch.rand(1, 3, 30, 32))


def test_registry_builds_by_name_and_lists_choices() -> None:
    assert set(CRITICS) == {"patch", "unet"}
    assert isinstance(create_critic({"arch": "unet", "width": 4}), UnetCritic)
    with pytest.raises(ConfigError, match="choose one of: patch, unet"):
        create_critic({"arch": "gan"})
    with pytest.raises(ConfigError, match="valid options: in_channels, width, num_blocks"):
        create_critic({"arch": "patch", "widht": 8})
    with pytest.raises(ConfigError, match="dropout"):
        create_critic({"arch": "patch", "dropout": 1.5})


def test_the_patch_critic_learns_to_tell_smooth_from_noisy() -> None:
    """Real = smooth gradients, fake = the same plus noise: a few Adam steps (beta1 = 0) must separate them."""
    torch.manual_seed(0)
    critic = PatchCritic(width=8, dropout=0.0)
    loss_fn = AdversarialLoss()
    optimizer = torch.optim.Adam(critic.parameters(), lr=2e-3, betas=(0.0, 0.99))
    ramp = torch.linspace(0, 1, 64)
    real = (ramp[None, None, :, None] * ramp[None, None, None, :]).expand(4, 3, 64, 64) * torch.rand(
        4, 3, 1, 1
    )
    fake = (real + 0.2 * torch.randn_like(real)).clamp(0, 1)
    with torch.no_grad():
        assert loss_fn.critic_loss(critic(real), critic(fake)) > 0.6  # starts near chance (ln 2)
    for _ in range(20):
        loss = loss_fn.critic_loss(critic(real), critic(fake))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    critic.eval()
    with torch.no_grad():
        assert critic_accuracy(critic(real), critic(fake)) == 1.0
        assert loss_fn.critic_loss(critic(real), critic(fake)) < 0.3


def test_gradients_reach_every_unet_critic_parameter() -> None:
    torch.manual_seed(0)
    critic = UnetCritic(width=4)
    critic(torch.rand(1, 3, 16, 16)).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.parameters())
