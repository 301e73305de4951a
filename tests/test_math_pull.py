"""pFedGraph's pull term (federation/pull.py): the gradient of
``scale * <kappa, theta> / ||theta||``, which is ``scale * (kappa / ||theta|| - <kappa, theta> theta / ||theta||^3)``,
worked out by hand on two clients with I = 2 items, d = 1, P = 1.

Client 0: theta = (V_0, V_1, Theta) = (2, 4, 4), ||theta|| = 6; kappa = (1, 2, 0.5), <kappa, theta> = 12.
Only item 0 is a compact (trained) row; item 1 enters through the constants fixed at the start.
Client 1: theta = (0, 3, 4), ||theta|| = 5; kappa = (2, 1, 1), <kappa, theta> = 7; both items are rows.
scale = sign * strength = -1 * 0.5.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import fedca.federation.store as store_module
from fedca.aggregators.base import Anchors
from fedca.federation.pull import AnchorPull
from fedca.federation.store import DenseStore


def _participants(tables):
    """(store, clients) for AnchorPull: participants 0..n-1 holding ``tables`` [n, I, d]."""
    return DenseStore(tables), torch.arange(tables.shape[0])


FULL_ITEMS = torch.tensor([[[2.0], [4.0]], [[0.0], [3.0]]], dtype=torch.float64)  # [n, I, d]
MLP = torch.tensor([[4.0], [4.0]], dtype=torch.float64)  # [n, P]
KAPPA = Anchors(items=torch.tensor([[[1.0], [2.0]], [[2.0], [1.0]]], dtype=torch.float64),
                mlp=torch.tensor([[0.5], [1.0]], dtype=torch.float64), strength=0.5, sign=-1)
ROW_OWNER = torch.tensor([0, 1, 1])  # compact rows: client 0 item 0, client 1 items 0 and 1
ROW_ITEMS = torch.tensor([0, 0, 1])
TABLE = torch.tensor([[2.0], [0.0], [3.0]], dtype=torch.float64)  # [R, d]

# expected gradients (scale -0.5):
# client 0, row item 0: -0.5 * (1 / 6 - 12 * 2 / 216) = -0.5 * (1 / 18) = -1 / 36
# client 0, mlp:        -0.5 * (0.5 / 6 - 12 * 4 / 216) = -0.5 * (-5 / 36) = 5 / 72
# client 1, row item 0: -0.5 * (2 / 5 - 7 * 0 / 125) = -0.2
# client 1, row item 1: -0.5 * (1 / 5 - 7 * 3 / 125) = -0.5 * (4 / 125) = -0.016
# client 1, mlp:        -0.5 * (1 / 5 - 7 * 4 / 125) = -0.5 * (-3 / 125) = 0.012
ROW_GRADS = [-1 / 36, -0.2, -0.016]
MLP_GRADS = [5 / 72, 0.012]


def pull():
    return AnchorPull(KAPPA, *_participants(FULL_ITEMS), ROW_OWNER, ROW_ITEMS, TABLE.clone(), MLP.clone())


def step(busy_clients=2, busy_rows=3, active=(0, 1)):
    return SimpleNamespace(busy_clients=busy_clients, busy_rows=busy_rows, active_dev=torch.tensor(active))


def test_pull_gradient_of_every_active_client():
    table_grad = torch.ones(3, 1, dtype=torch.float64)  # the pull adds to what is there
    mlp_grad = torch.zeros(2, 1, dtype=torch.float64)
    pull().add_grads(TABLE, MLP, table_grad, mlp_grad, step())
    torch.testing.assert_close(table_grad[:, 0], 1 + torch.tensor(ROW_GRADS, dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(mlp_grad[:, 0], torch.tensor(MLP_GRADS, dtype=torch.float64), rtol=0, atol=1e-15)


def test_constants_from_rows_outside_the_table_are_fixed_at_the_start():
    anchor_pull = pull()
    # client 0's untrained item 1 contributes kappa * V = 2 * 4 to the dot and 16 to the squared norm
    torch.testing.assert_close(anchor_pull.rest_dot, torch.tensor([8.0, 0.0], dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(anchor_pull.rest_sq, torch.tensor([16.0, 0.0], dtype=torch.float64), rtol=0, atol=0)
    assert anchor_pull.scale == -0.5
    assert anchor_pull.row_offsets.tolist() == [0, 1, 3]
    assert anchor_pull.kappa_rows[:, 0].tolist() == [1.0, 2.0, 1.0]


def test_inactive_clients_get_no_pull():
    table_grad = torch.zeros(3, 1, dtype=torch.float64)
    mlp_grad = torch.zeros(2, 1, dtype=torch.float64)
    pull().add_grads(TABLE, MLP, table_grad, mlp_grad, step(active=(1,)))
    assert table_grad[0, 0] == 0.0 and mlp_grad[0, 0] == 0.0
    torch.testing.assert_close(table_grad[1:, 0], torch.tensor(ROW_GRADS[1:], dtype=torch.float64), rtol=0, atol=1e-15)
    assert abs(float(mlp_grad[1, 0]) - MLP_GRADS[1]) < 1e-15


def test_only_the_busy_prefix_is_touched():
    table_grad = torch.zeros(3, 1, dtype=torch.float64)
    mlp_grad = torch.zeros(2, 1, dtype=torch.float64)
    pull().add_grads(TABLE, MLP, table_grad, mlp_grad, step(busy_clients=1, busy_rows=1, active=(0,)))
    assert abs(float(table_grad[0, 0]) - ROW_GRADS[0]) < 1e-15 and abs(float(mlp_grad[0, 0]) - MLP_GRADS[0]) < 1e-15
    assert table_grad[1:].abs().sum() == 0 and mlp_grad[1].abs().sum() == 0


def test_the_gradient_follows_the_current_rows_and_mlp():
    # client 1 has moved to V = (0, 4) and Theta = 3 since the start: theta = (0, 4, 3), norm 5,
    # <kappa, theta> = 0 + 4 + 3 = 7; row item 1: -0.5 * (1 / 5 - 7 * 4 / 125) = 0.012,
    # mlp: -0.5 * (1 / 5 - 7 * 3 / 125) = -0.016
    table = TABLE.clone()
    table[2, 0] = 4.0
    mlp = MLP.clone()
    mlp[1, 0] = 3.0
    table_grad = torch.zeros(3, 1, dtype=torch.float64)
    mlp_grad = torch.zeros(2, 1, dtype=torch.float64)
    pull().add_grads(table, mlp, table_grad, mlp_grad, step())
    torch.testing.assert_close(table_grad[1:, 0], torch.tensor([-0.2, 0.012], dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(mlp_grad[1, 0], torch.tensor(-0.016, dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(table_grad[0, 0], torch.tensor(ROW_GRADS[0], dtype=torch.float64), rtol=0, atol=1e-15)


def test_the_last_clients_without_compact_rows_and_more_clients_than_items():
    # three clients, I = 2 items, one compact row (client 0 item 0): clients 1 and 2 train no row this
    # round (they are last, so the row counts need all n entries), and n != I. Client 1 as above:
    # its items give the constants 2 * 0 + 1 * 3 = 3 and 0 + 9 = 9, its mlp 0.012. Client 2:
    # theta = (1, 2, 2), ||theta|| = 3; kappa = (3, 1, 1), <kappa, theta> = 3 + 2 + 2 = 7; constants
    # 5 and 5; mlp: -0.5 * (1 / 3 - 7 * 2 / 27) = -0.5 * (-5 / 27) = 5 / 54.
    full_items = torch.tensor([[[2.0], [4.0]], [[0.0], [3.0]], [[1.0], [2.0]]], dtype=torch.float64)
    mlp = torch.tensor([[4.0], [4.0], [2.0]], dtype=torch.float64)
    kappa = Anchors(items=torch.tensor([[[1.0], [2.0]], [[2.0], [1.0]], [[3.0], [1.0]]], dtype=torch.float64),
                    mlp=torch.tensor([[0.5], [1.0], [1.0]], dtype=torch.float64), strength=0.5, sign=-1)
    table = torch.tensor([[2.0]], dtype=torch.float64)  # [R = 1, d = 1]
    anchor_pull = AnchorPull(kappa, *_participants(full_items), torch.tensor([0]), torch.tensor([0]), table.clone(), mlp.clone())
    assert anchor_pull.row_offsets.tolist() == [0, 1, 1, 1]
    torch.testing.assert_close(anchor_pull.rest_dot, torch.tensor([8.0, 3.0, 5.0], dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(anchor_pull.rest_sq, torch.tensor([16.0, 9.0, 5.0], dtype=torch.float64), rtol=0, atol=0)
    table_grad = torch.zeros(1, 1, dtype=torch.float64)
    mlp_grad = torch.zeros(3, 1, dtype=torch.float64)
    anchor_pull.add_grads(table, mlp, table_grad, mlp_grad, step(busy_clients=3, busy_rows=1, active=(0, 1, 2)))
    assert abs(float(table_grad[0, 0]) - ROW_GRADS[0]) < 1e-15
    torch.testing.assert_close(mlp_grad[:, 0], torch.tensor(MLP_GRADS + [5 / 54], dtype=torch.float64),
                               rtol=0, atol=1e-15)


def test_float64_anchors_are_cast_to_a_float32_model():
    # the anchors keep the server's float64; the term runs in the model's float32
    to32 = {"dtype": torch.float32}
    anchor_pull = AnchorPull(KAPPA, *_participants(FULL_ITEMS.to(**to32)), ROW_OWNER, ROW_ITEMS, TABLE.to(**to32), MLP.to(**to32))
    assert anchor_pull.kappa_rows.dtype == torch.float32 and anchor_pull.kappa_mlp.dtype == torch.float32
    table_grad = torch.zeros(3, 1, **to32)
    mlp_grad = torch.zeros(2, 1, **to32)
    anchor_pull.add_grads(TABLE.to(**to32), MLP.to(**to32), table_grad, mlp_grad, step())
    # small integer inputs are exact in float32; the float32 arithmetic rounds each result by a few
    # ulp of 0.2 (1.5e-8 each)
    torch.testing.assert_close(table_grad[:, 0], torch.tensor(ROW_GRADS, **to32), rtol=0, atol=1e-7)
    torch.testing.assert_close(mlp_grad[:, 0], torch.tensor(MLP_GRADS, **to32), rtol=0, atol=1e-7)


@pytest.mark.parametrize("chunk_clients", [None, 1])
def test_the_untrained_rows_constants_are_the_whole_blocks_minus_the_compact_rows(monkeypatch, chunk_clients):
    # random float64 blocks, read from the store one client at a time or all at once
    if chunk_clients is not None:
        monkeypatch.setattr(store_module, "CHUNK_VALUES", chunk_clients * 9 * 4)
    gen = torch.Generator().manual_seed(11)
    full = torch.randn(3, 9, 4, generator=gen, dtype=torch.float64)
    kappa = Anchors(items=torch.randn(3, 9, 4, generator=gen, dtype=torch.float64),
                    mlp=torch.randn(3, 2, generator=gen, dtype=torch.float64), strength=0.5, sign=-1)
    row_owner, row_items = torch.tensor([0, 1, 1, 2]), torch.tensor([3, 0, 8, 5])
    table = full[row_owner, row_items].clone()
    pull = AnchorPull(kappa, *_participants(full), row_owner, row_items, table, torch.zeros(3, 2, dtype=torch.float64))
    blocks, anchors = full.reshape(3, -1).numpy(), kappa.items.reshape(3, -1).numpy()
    trained = np.zeros((3, 9), dtype=bool)
    trained[row_owner.numpy(), row_items.numpy()] = True
    rest = np.repeat(~trained, 4, axis=1)  # [3, 36]: the entries of rows outside the compact table
    # float64 sums in other orders than numpy's: 1e-13
    np.testing.assert_allclose(pull.rest_dot.numpy(), (anchors * blocks * rest).sum(1), rtol=0, atol=1e-13)
    np.testing.assert_allclose(pull.rest_sq.numpy(), (blocks * blocks * rest).sum(1), rtol=0, atol=1e-13)
