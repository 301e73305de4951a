"""Privacy noise on uploads: clipping bounds the update, the noise has the configured scale,
noise 0 is the noiseless run, and a client's own state is never noised."""

import pandas as pd
import pytest
import torch

from fedca.config.compose import compose_run_config
from fedca.errors import FedcaError
from fedca.federation.privacy import PrivacySettings, privatize
from fedca.run import run


def _blocks(n=50, items=30, dim=4, mlp=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    start = (torch.randn(n, items, dim, generator=gen, dtype=torch.float64),
             torch.randn(n, mlp, generator=gen, dtype=torch.float64))
    scales = torch.linspace(0.01, 3.0, n, dtype=torch.float64)
    trained = (start[0] + scales.view(-1, 1, 1) * torch.randn(n, items, dim, generator=gen, dtype=torch.float64),
               start[1] + scales.view(-1, 1) * torch.randn(n, mlp, generator=gen, dtype=torch.float64))
    return start, trained


def _update_norms(start, uploaded):
    return ((uploaded[0] - start[0]).pow(2).sum((1, 2)) + (uploaded[1] - start[1]).pow(2).sum(1)).sqrt()


def test_clipped_uploads_have_update_norm_at_most_clip_and_small_updates_pass_unchanged():
    start, trained = _blocks()
    items, mlp, stats = privatize(*start, *trained, PrivacySettings(clip=2.0), torch.Generator().manual_seed(0))
    norms = _update_norms(start, (items, mlp))
    original = _update_norms(start, trained)
    assert float(norms.max()) <= 2.0 * (1 + 1e-9)
    small = original < 2.0
    assert torch.allclose(items[small], trained[0][small], atol=1e-12)
    assert torch.allclose(norms[~small], torch.full_like(norms[~small], 2.0))
    assert stats["clipped_share"] == pytest.approx(float((~small).double().mean()))


def test_noise_has_std_noise_multiplier_times_clip():
    start, _ = _blocks(n=200, items=50)
    items, mlp, stats = privatize(*start, *start, PrivacySettings(clip=0.5, noise_multiplier=1.5),
                                  torch.Generator().manual_seed(1))
    assert stats["noise_std"] == pytest.approx(0.75)
    assert float((items - start[0]).std()) == pytest.approx(0.75, rel=0.02)


def test_noise_without_clip_is_refused():
    with pytest.raises(FedcaError, match="privacy.clip"):
        compose_run_config(["privacy.noise_multiplier=1"])


def _test_rows(tmp_path, name, overrides):
    """rounds.csv metrics of a short run; the run tests pass the generated tiny dataset (tests/conftest.py)."""
    cfg = compose_run_config(["rounds=2", "local_epochs=2", "progress=false", *overrides])
    run(cfg, tmp_path / name)
    rows = pd.read_csv(tmp_path / name / "rounds.csv")
    return rows[["round", "split", "hr@10", "ndcg@10", "train_loss"]]


@pytest.mark.parametrize("agg", ["fedavg", "composite"])
def test_noise_zero_is_bit_identical_to_no_privacy_config(tiny_data_env, tmp_path, agg):
    plain = _test_rows(tmp_path, "plain", [*tiny_data_env, f"agg={agg}"])
    zero = _test_rows(tmp_path, "zero", [*tiny_data_env, f"agg={agg}", "privacy.noise_multiplier=0"])
    pd.testing.assert_frame_equal(plain, zero, check_exact=True)
    noisy = _test_rows(tmp_path, "noisy", [*tiny_data_env, f"agg={agg}", "privacy.clip=1",
                                           "privacy.noise_multiplier=1"])
    assert not noisy.equals(plain)


def test_a_clients_own_state_is_never_noised(tiny_data_env, tmp_path):
    plain = _test_rows(tmp_path, "plain", [*tiny_data_env, "agg=local"])
    noisy = _test_rows(tmp_path, "noisy", [*tiny_data_env, "agg=local", "privacy.clip=0.1",
                                           "privacy.noise_multiplier=5"])
    pd.testing.assert_frame_equal(plain, noisy, check_exact=True)
