"""Adversarial loss values for real/fake labels, the critic's accuracy, and the generator's combined loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from decrappify.errors import ConfigError
from decrappify.train.losses import AdversarialLoss, GANGeneratorLoss, PixelLoss, critic_accuracy

LN2 = math.log(2.0)


def test_undecided_critic_scores_ln2_for_both_labels() -> None:
    loss = AdversarialLoss()
    zeros = torch.zeros(2, 1, 5, 5)
    assert float(loss(zeros, True)) == pytest.approx(LN2)
    assert float(loss(zeros, False)) == pytest.approx(LN2)
    assert float(loss.critic_loss(zeros, zeros)) == pytest.approx(LN2)
    assert float(loss.generator_loss(zeros)) == pytest.approx(LN2)


def test_bce_values_match_the_formula() -> None:
    """BCE with logits: -log(sigmoid(x)) for real, -log(1 - sigmoid(x)) for fake, averaged over patches."""
    loss = AdversarialLoss()
    logits = torch.tensor([[-2.0, 0.5], [1.0, 3.0]])
    sig = torch.sigmoid(logits)
    assert float(loss(logits, True)) == pytest.approx(float(-torch.log(sig).mean()), rel=1e-6)
    assert float(loss(logits, False)) == pytest.approx(float(-torch.log(1 - sig).mean()), rel=1e-6)


def test_a_confident_right_critic_has_low_loss_and_a_wrong_one_high() -> None:
    loss = AdversarialLoss()
    real, fake = torch.full((4, 1, 3, 3), 8.0), torch.full((4, 1, 3, 3), -8.0)
    assert float(loss.critic_loss(real, fake)) < 1e-3
    assert float(loss.critic_loss(fake, real)) > 7.9  # swapped: as wrong as it can be
    assert float(loss.generator_loss(fake)) > 7.9  # the critic sees through the generator
    assert float(loss.generator_loss(real)) < 1e-3  # the generator fools the critic


def test_label_smoothing_applies_to_real_labels_of_the_critic_only() -> None:
    smooth = AdversarialLoss(real_label=0.9)
    logits = torch.full((1, 1, 2, 2), 8.0)
    expected = -(
        0.9 * math.log(torch.sigmoid(torch.tensor(8.0)))
        + 0.1 * math.log(1 - torch.sigmoid(torch.tensor(8.0)))
    )
    assert float(smooth(logits, True)) == pytest.approx(expected, rel=1e-5)
    assert float(smooth.generator_loss(logits)) < 1e-3  # the generator still aims at 1
    with pytest.raises(ConfigError, match="real_label"):
        AdversarialLoss(real_label=0.4)


def test_critic_accuracy_counts_patches_on_the_right_side() -> None:
    real = torch.tensor([1.0, 2.0, -1.0, 3.0])  # 3 of 4 right
    fake = torch.tensor([-1.0, 0.5])  # 1 of 2 right
    assert critic_accuracy(real, fake) == pytest.approx((0.75 + 0.5) / 2)
    assert critic_accuracy(torch.zeros(3), torch.zeros(3)) == 0.0  # undecided is not right


class _Content(nn.Module):
    """A content loss in the trainer's shape: (pred, hq) -> (total, terms)."""

    def __init__(self):
        super().__init__()
        self.pixel = PixelLoss("l1")

    def forward(self, pred, hq):
        value = self.pixel(pred, hq)
        return value, {"pixel": value}


def test_generator_loss_adds_the_weighted_adversarial_term() -> None:
    pred, hq = torch.full((1, 3, 4, 4), 0.25), torch.full((1, 3, 4, 4), 0.75)
    fake_logits = torch.zeros(1, 1, 2, 2)
    total, terms = GANGeneratorLoss(_Content(), adversarial_weight=2.0)(pred, hq, fake_logits)
    assert float(terms["content"]) == pytest.approx(0.5)
    assert float(terms["adversarial"]) == pytest.approx(2.0 * LN2)
    assert float(total) == pytest.approx(0.5 + 2.0 * LN2) and "pixel" in terms
    total0, _ = GANGeneratorLoss(_Content(), adversarial_weight=0.0)(pred, hq, fake_logits)
    assert float(total0) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="adversarial weight"):
        GANGeneratorLoss(_Content(), adversarial_weight=float("nan"))


def test_generator_gradient_pushes_outputs_toward_what_the_critic_calls_real() -> None:
    """With a fixed critic that likes bright pixels, the adversarial gradient must brighten the output."""
    pred = torch.full((1, 3, 8, 8), 0.5, requires_grad=True)

    def critic(x: torch.Tensor) -> torch.Tensor:
        return (x.mean(dim=1, keepdim=True) - 0.5) * 10

    AdversarialLoss().generator_loss(critic(pred)).backward()
    assert (pred.grad < 0).all()  # descending the loss raises every pixel
