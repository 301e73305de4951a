"""Clipped, noised uploads (federation/privacy.py) on two clients with 3-4-5 update norms.

Client 0's update is items (3, 0), mlp (4): norm sqrt(9 + 16) = 5. Client 1's is items (0, 0.6),
mlp (0.8): norm 1. With clip = 2, client 0 is scaled by 2 / 5 = 0.4 and client 1 (norm below the
clip) keeps its update.
"""

import pytest
import torch

from fedca.federation.privacy import PrivacySettings, privatize

START_ITEMS = torch.tensor([[[1.0, 1.0]], [[0.0, -1.0]]], dtype=torch.float64)  # [n, I, d]
START_MLP = torch.tensor([[2.0], [0.0]], dtype=torch.float64)  # [n, P]
TRAINED_ITEMS = START_ITEMS + torch.tensor([[[3.0, 0.0]], [[0.0, 0.6]]], dtype=torch.float64)
TRAINED_MLP = START_MLP + torch.tensor([[4.0], [0.8]], dtype=torch.float64)


def test_clipping_scales_large_updates_to_the_clip_norm():
    items, mlp, stats = privatize(START_ITEMS, START_MLP, TRAINED_ITEMS, TRAINED_MLP,
                                  PrivacySettings(clip=2.0), torch.Generator().manual_seed(0))
    # client 0: start + 0.4 * update = (1 + 1.2, 1), mlp 2 + 1.6; client 1 unchanged from trained
    torch.testing.assert_close(items, torch.tensor([[[2.2, 1.0]], [[0.0, -0.4]]], dtype=torch.float64),
                               rtol=0, atol=1e-15)
    torch.testing.assert_close(mlp, torch.tensor([[3.6], [0.8]], dtype=torch.float64), rtol=0, atol=1e-15)
    assert stats == {"noise_std": 0.0, "clipped_share": 0.5, "update_norm_median": pytest.approx(1.0, abs=1e-15)}


def test_no_clip_and_no_noise_uploads_the_trained_blocks():
    items, mlp, stats = privatize(START_ITEMS, START_MLP, TRAINED_ITEMS, TRAINED_MLP, PrivacySettings(),
                                  torch.Generator().manual_seed(0))
    torch.testing.assert_close(items, TRAINED_ITEMS, rtol=0, atol=1e-15)
    torch.testing.assert_close(mlp, TRAINED_MLP, rtol=0, atol=1e-15)
    assert stats["clipped_share"] == 0.0 and stats["noise_std"] == 0.0
    # torch.median of [5, 1] is the lower middle value, 1
    assert stats["update_norm_median"] == pytest.approx(1.0, abs=1e-15)


def test_a_clip_above_every_norm_changes_nothing():
    items, mlp, stats = privatize(START_ITEMS, START_MLP, TRAINED_ITEMS, TRAINED_MLP, PrivacySettings(clip=5.0),
                                  torch.Generator().manual_seed(0))
    torch.testing.assert_close(items, TRAINED_ITEMS, rtol=0, atol=1e-15)
    torch.testing.assert_close(mlp, TRAINED_MLP, rtol=0, atol=1e-15)
    assert stats["clipped_share"] == 0.0  # norm 5 equals the clip: factor 1, not clipped


def test_a_zero_update_stays_zero_under_clipping():
    items, mlp, stats = privatize(START_ITEMS, START_MLP, START_ITEMS.clone(), START_MLP.clone(),
                                  PrivacySettings(clip=0.5), torch.Generator().manual_seed(0))
    assert torch.equal(items, START_ITEMS) and torch.equal(mlp, START_MLP)
    assert stats["update_norm_median"] == 0.0 and stats["clipped_share"] == 0.0


def test_noise_has_std_multiplier_times_clip_drawn_items_first():
    settings = PrivacySettings(clip=2.0, noise_multiplier=0.25)  # std 0.5
    items, mlp, stats = privatize(START_ITEMS, START_MLP, TRAINED_ITEMS, TRAINED_MLP, settings,
                                  torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)  # the same raw draws, in the same order
    item_noise = torch.randn((2, 1, 2), generator=generator, dtype=torch.float64)
    mlp_noise = torch.randn((2, 1), generator=generator, dtype=torch.float64)
    clipped_items = torch.tensor([[[2.2, 1.0]], [[0.0, -0.4]]], dtype=torch.float64)
    torch.testing.assert_close(items, clipped_items + 0.5 * item_noise, rtol=0, atol=1e-15)
    torch.testing.assert_close(mlp, torch.tensor([[3.6], [0.8]], dtype=torch.float64) + 0.5 * mlp_noise,
                               rtol=0, atol=1e-15)
    assert stats["noise_std"] == 0.5


def test_inputs_are_not_modified_and_float32_stays_float32():
    start_items, trained_items = START_ITEMS.float(), TRAINED_ITEMS.float()
    start_mlp, trained_mlp = START_MLP.float(), TRAINED_MLP.float()
    items, mlp, _ = privatize(start_items, start_mlp, trained_items, trained_mlp,
                              PrivacySettings(clip=2.0, noise_multiplier=1.0), torch.Generator().manual_seed(1))
    assert items.dtype == torch.float32 and mlp.dtype == torch.float32
    assert torch.equal(start_items, START_ITEMS.float()) and torch.equal(trained_items, TRAINED_ITEMS.float())
    assert torch.equal(start_mlp, START_MLP.float()) and torch.equal(trained_mlp, TRAINED_MLP.float())


@pytest.mark.parametrize("settings, active, std", [
    (PrivacySettings(), False, 0.0),
    (PrivacySettings(clip=1.5), True, 0.0),
    (PrivacySettings(noise_multiplier=0.5), True, 0.0),  # no clip: no noise scale
    (PrivacySettings(clip=1.5, noise_multiplier=2.0), True, 3.0),
    (PrivacySettings(clip=1.5, noise_multiplier=0.0), True, 0.0),
])
def test_settings_activity_and_noise_std(settings, active, std):
    assert settings.active is active
    assert settings.noise_std == std
