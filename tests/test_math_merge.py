"""How clients merge what the server sends (federation/merge.py), on hand-sized populations.

Every expected value is written out as arithmetic: a receiving client's new block is
``keep_local * own + (1 - keep_local) * sent``. Values are dyadic fractions (multiples of 1/8) so
float64 results are exact and the comparisons use ``torch.equal``.
"""

import torch

from fedca.aggregators.base import Downloads
from fedca.federation.merge import apply_downloads
from fedca.federation.population import Population


def population() -> Population:
    """3 clients, 2 items, d = 1, P = 3; client c's item rows are [c+1, c+2], its MLP [10c, 10c+1, 10c+2]."""
    items = torch.tensor([[[1.0], [2.0]], [[2.0], [3.0]], [[3.0], [4.0]]], dtype=torch.float64)
    mlp = torch.tensor([[0.0, 1.0, 2.0], [10.0, 11.0, 12.0], [20.0, 21.0, 22.0]], dtype=torch.float64)
    user = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    return Population(user=user, items=items, mlp=mlp)


SENT_ITEMS = torch.tensor([[5.0], [7.0]], dtype=torch.float64)  # [I, d]
SENT_MLP = torch.tensor([4.0, 8.0, 16.0], dtype=torch.float64)  # [P]


def test_global_download_replaces_every_clients_block_when_nothing_is_kept():
    pop = population()
    apply_downloads(pop, Downloads(kind="global", items=SENT_ITEMS, mlp=SENT_MLP, keep_local=0.0))
    assert torch.equal(pop.items, SENT_ITEMS.unsqueeze(0).expand(3, 2, 1))
    assert torch.equal(pop.mlp, SENT_MLP.unsqueeze(0).expand(3, 3))
    assert torch.equal(pop.user, population().user)


def test_global_download_mixes_with_the_kept_share():
    pop = population()
    apply_downloads(pop, Downloads(kind="global", items=SENT_ITEMS, mlp=SENT_MLP, keep_local=0.25))
    # client 0, item 0: 0.25 * 1 + 0.75 * 5 = 4.0; item 1: 0.25 * 2 + 0.75 * 7 = 5.75
    # client 2, item 1: 0.25 * 4 + 0.75 * 7 = 6.25
    expected_items = torch.tensor([[[4.0], [5.75]], [[4.25], [6.0]], [[4.5], [6.25]]], dtype=torch.float64)
    # client 1: 0.25 * [10, 11, 12] + 0.75 * [4, 8, 16] = [5.5, 8.75, 15.0]
    expected_mlp = torch.tensor([[3.0, 6.25, 12.5], [5.5, 8.75, 15.0], [8.0, 11.25, 17.5]], dtype=torch.float64)
    assert torch.equal(pop.items, expected_items)
    assert torch.equal(pop.mlp, expected_mlp)


def test_global_download_without_mlp_leaves_the_mlp_alone():
    pop = population()
    apply_downloads(pop, Downloads(kind="global", items=SENT_ITEMS, mlp=None, keep_local=0.5))
    assert torch.equal(pop.mlp, population().mlp)
    # client 0, item 0: 0.5 * 1 + 0.5 * 5 = 3
    assert torch.equal(pop.items[0], torch.tensor([[3.0], [4.5]], dtype=torch.float64))


def test_global_download_of_some_mlp_columns_changes_only_those_columns():
    pop = population()
    columns = torch.tensor([0, 2])
    sent = torch.tensor([4.0, 16.0], dtype=torch.float64)  # the entries for columns 0 and 2
    apply_downloads(pop, Downloads(kind="global", items=SENT_ITEMS, mlp=sent, keep_local=0.5, mlp_columns=columns))
    # client 1: column 0 = 0.5 * 10 + 0.5 * 4 = 7, column 1 stays 11, column 2 = 0.5 * 12 + 0.5 * 16 = 14
    expected = torch.tensor([[2.0, 1.0, 9.0], [7.0, 11.0, 14.0], [12.0, 21.0, 19.0]], dtype=torch.float64)
    assert torch.equal(pop.mlp, expected)


def test_global_download_of_columns_with_nothing_kept_copies_those_columns():
    pop = population()
    columns = torch.tensor([1])
    apply_downloads(pop, Downloads(kind="global", items=SENT_ITEMS, mlp=torch.tensor([9.0], dtype=torch.float64),
                                   keep_local=0.0, mlp_columns=columns))
    expected = torch.tensor([[0.0, 9.0, 2.0], [10.0, 9.0, 12.0], [20.0, 9.0, 22.0]], dtype=torch.float64)
    assert torch.equal(pop.mlp, expected)
    assert torch.equal(pop.items, SENT_ITEMS.unsqueeze(0).expand(3, 2, 1))


def test_global_download_for_listed_clients_reaches_only_them():
    pop = population()
    clients = torch.tensor([2, 0])
    apply_downloads(pop, Downloads(kind="global", items=SENT_ITEMS, mlp=SENT_MLP, keep_local=0.5, clients=clients))
    # client 2, item 0: 0.5 * 3 + 0.5 * 5 = 4; client 0, item 1: 0.5 * 2 + 0.5 * 7 = 4.5
    assert torch.equal(pop.items[2], torch.tensor([[4.0], [5.5]], dtype=torch.float64))
    assert torch.equal(pop.items[0], torch.tensor([[3.0], [4.5]], dtype=torch.float64))
    assert torch.equal(pop.items[1], population().items[1])
    # client 2's MLP: 0.5 * [20, 21, 22] + 0.5 * [4, 8, 16] = [12, 14.5, 19]
    assert torch.equal(pop.mlp[2], torch.tensor([12.0, 14.5, 19.0], dtype=torch.float64))
    assert torch.equal(pop.mlp[1], population().mlp[1])


def test_personal_download_gives_each_listed_client_its_own_block():
    pop = population()
    clients = torch.tensor([1, 2])
    items = torch.tensor([[[8.0], [8.0]], [[0.0], [16.0]]], dtype=torch.float64)  # [m, I, d]
    mlp = torch.tensor([[0.0, 0.0, 0.0], [4.0, 4.0, 4.0]], dtype=torch.float64)  # [m, P]
    apply_downloads(pop, Downloads(kind="personal", items=items, mlp=mlp, clients=clients, keep_local=0.75))
    # client 1: 0.75 * [2, 3] + 0.25 * [8, 8] = [3.5, 4.25]; client 2: 0.75 * [3, 4] + 0.25 * [0, 16] = [2.25, 7]
    assert torch.equal(pop.items[1], torch.tensor([[3.5], [4.25]], dtype=torch.float64))
    assert torch.equal(pop.items[2], torch.tensor([[2.25], [7.0]], dtype=torch.float64))
    assert torch.equal(pop.items[0], population().items[0])
    # client 2's MLP: 0.75 * [20, 21, 22] + 0.25 * 4 = [16, 16.75, 17.5]; client 1: 0.75 * [10, 11, 12]
    assert torch.equal(pop.mlp[1], torch.tensor([7.5, 8.25, 9.0], dtype=torch.float64))
    assert torch.equal(pop.mlp[2], torch.tensor([16.0, 16.75, 17.5], dtype=torch.float64))
    assert torch.equal(pop.mlp[0], population().mlp[0])


def test_personal_download_of_some_mlp_columns_changes_only_those_entries_of_those_clients():
    pop = population()
    clients = torch.tensor([0, 2])
    columns = torch.tensor([1, 2])
    items = SENT_ITEMS.unsqueeze(0).expand(2, 2, 1)
    mlp = torch.tensor([[4.0, 8.0], [0.0, 2.0]], dtype=torch.float64)  # [m, S]
    apply_downloads(pop, Downloads(kind="personal", items=items, mlp=mlp, clients=clients, keep_local=0.5,
                                   mlp_columns=columns))
    # client 0: [0, 0.5 * 1 + 0.5 * 4, 0.5 * 2 + 0.5 * 8] = [0, 2.5, 5]
    # client 2: [20, 0.5 * 21 + 0, 0.5 * 22 + 0.5 * 2] = [20, 10.5, 12]
    expected = torch.tensor([[0.0, 2.5, 5.0], [10.0, 11.0, 12.0], [20.0, 10.5, 12.0]], dtype=torch.float64)
    assert torch.equal(pop.mlp, expected)


def test_personal_download_without_mlp_keeps_every_mlp():
    pop = population()
    apply_downloads(pop, Downloads(kind="personal", items=SENT_ITEMS.unsqueeze(0), clients=torch.tensor([1]),
                                   keep_local=0.0))
    assert torch.equal(pop.mlp, population().mlp)
    assert torch.equal(pop.items[1], SENT_ITEMS)


def test_nothing_sent_changes_nothing():
    pop = population()
    apply_downloads(pop, Downloads(kind="none"))
    reference = population()
    assert torch.equal(pop.items, reference.items)
    assert torch.equal(pop.mlp, reference.mlp)
    assert torch.equal(pop.user, reference.user)


def test_user_delta_is_added_to_the_listed_clients_only():
    pop = population()
    delta = torch.tensor([[0.5], [-1.0]], dtype=torch.float32)  # converted to the user dtype
    apply_downloads(pop, Downloads(kind="none", user_clients=torch.tensor([2, 0]), user_delta=delta))
    # client 2: 3 + 0.5 = 3.5; client 0: 1 - 1 = 0; client 1 unchanged
    assert torch.equal(pop.user, torch.tensor([[0.0], [2.0], [3.5]], dtype=torch.float64))
    assert pop.user.dtype == torch.float64


def test_user_delta_rides_along_with_a_global_download():
    pop = population()
    apply_downloads(pop, Downloads(kind="global", items=SENT_ITEMS, keep_local=0.0,
                                   user_clients=torch.tensor([1]), user_delta=torch.tensor([[0.25]], dtype=torch.float64)))
    assert torch.equal(pop.user, torch.tensor([[1.0], [2.25], [3.0]], dtype=torch.float64))
    assert torch.equal(pop.items, SENT_ITEMS.unsqueeze(0).expand(3, 2, 1))
