"""Closed-form losses and gradients of the backbones against PyTorch's own."""

import pytest
import torch
import torch.nn.functional as F

from fedca.models.backbones import Backbone, binary_cross_entropy, build_backbone


def test_vectorised_bce_matches_pytorch_within_an_ulp_including_saturated_scores():
    generator = torch.Generator().manual_seed(0)
    logits = torch.cat([torch.randn(100_000, generator=generator) * 8, torch.tensor([-200.0, 200.0, 0.0])])
    prob = torch.sigmoid(logits)
    target = (torch.rand(logits.numel(), generator=generator) < 0.3).float()
    target[-3:] = torch.tensor([1.0, 0.0, 1.0])
    ours, reference = binary_cross_entropy(prob, target), F.binary_cross_entropy(prob, target, reduction="none")
    assert float(ours[-3:-1].min()) == 100.0  # log 0 clamped at -100, as PyTorch does
    torch.testing.assert_close(ours, reference, rtol=2e-7, atol=1e-7)


@pytest.mark.parametrize("name", ["fcf", "pfedrec"])
def test_closed_form_gradients_match_autograd(name):
    generator = torch.Generator().manual_seed(1)
    backbone = build_backbone(name, [], 8)
    a, b, d = 3, 5, 8
    user, items = torch.randn(a, d, generator=generator, dtype=torch.float64), \
        torch.randn(a, b, d, generator=generator, dtype=torch.float64)
    mlp = torch.randn(a, backbone.mlp_size(), generator=generator, dtype=torch.float64)
    target = (torch.rand(a, b, generator=generator) < 0.5).double()
    weight = torch.rand(a, b, generator=generator, dtype=torch.float64)
    loss, grad_user, grad_items, grad_mlp = backbone.loss_and_grads(user, items, mlp, target, weight)
    auto_loss, auto_user, auto_items, auto_mlp = Backbone.loss_and_grads(backbone, user, items, mlp, target, weight)
    torch.testing.assert_close(loss, auto_loss)
    torch.testing.assert_close(grad_user, auto_user)
    torch.testing.assert_close(grad_items.full(), auto_items.full())
    if backbone.mlp_size():
        torch.testing.assert_close(grad_mlp, auto_mlp)
