"""Local differential-privacy style uploads: per-client clipping and Gaussian noise.

A participant's update of the shared block, delta_i = theta_i(after training) - theta_i(at the
start of training) over theta = (V, Theta) flattened, is scaled to norm <= ``clip``; the
client uploads theta_i(start) + clipped delta_i + N(0, (noise_multiplier * clip)^2 I). Its own
state stays the un-noised trained one. Sample counts and whatever an aggregator declares in
``reveals`` are sent as they are.

Shapes: n participants, I items, d dims, P MLP size.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

from fedca.metrics.means import exact_mean


@dataclass
class PrivacySettings:
    """clip: bound on each client's update norm (None: no clipping); noise_multiplier: noise
    std in units of ``clip`` (0: no noise)."""

    clip: Optional[float] = None
    noise_multiplier: float = 0.0

    @property
    def active(self) -> bool:
        return self.clip is not None or self.noise_multiplier > 0

    @property
    def noise_std(self) -> float:
        return self.noise_multiplier * self.clip if self.clip is not None else 0.0


def privatize(start_items: torch.Tensor, start_mlp: torch.Tensor, trained_items: torch.Tensor,
              trained_mlp: torch.Tensor, settings: PrivacySettings,
              generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, float]]:
    """The uploads (items [n, I, d], mlp [n, P]) from the blocks at the start of training and after
    it (same shapes), with per-round statistics: noise_std, clipped_share and the median update norm."""
    item_delta = trained_items - start_items  # [n, I, d]
    mlp_delta = trained_mlp - start_mlp  # [n, P]
    norms = (item_delta.double().pow(2).sum((1, 2)) + mlp_delta.double().pow(2).sum(1)).sqrt()  # [n]
    factor = torch.ones_like(norms)
    if settings.clip is not None:
        factor = (settings.clip / norms.clamp(min=1e-300)).clamp(max=1.0)
    scale = factor.to(item_delta)
    items = start_items + item_delta * scale.view(-1, 1, 1)
    mlp = start_mlp + mlp_delta * scale.view(-1, 1)
    std = settings.noise_std
    if std > 0:
        items += std * torch.randn(items.shape, generator=generator, dtype=items.dtype).to(items.device)
        mlp += std * torch.randn(mlp.shape, generator=generator, dtype=mlp.dtype).to(mlp.device)
    stats = {"noise_std": std, "clipped_share": exact_mean(factor < 1),
             "update_norm_median": float(norms.median())}
    return items, mlp, stats
