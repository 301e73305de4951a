"""Client stores' operations (fedca/federation/store.py) against a plain [N, I, d] tensor operated
on with indexing, their state round trips and store=auto's pick (the fast tests mutation testing runs)."""

import pytest
import torch

from fedca.errors import FedcaError
from fedca.federation.store import StoreConfig, build_store, choose_store

N, I, D = 7, 11, 3


def _operations(generator):
    """A fixed sequence of store operations with random arguments, as (name, args) pairs; each
    applied to a plain tensor by ``_apply_plain`` and to a store by ``_apply_store``."""
    ops = []
    for _ in range(3):
        count = 9
        clients = torch.randint(0, N, (count,), generator=generator)
        items = torch.randint(0, I, (count,), generator=generator)
        keys = torch.unique(clients * I + items)  # distinct rows: a write's result does not depend on order
        ops.append(("write_rows", keys // I, keys % I, torch.randn(keys.numel(), D, generator=generator,
                                                                  dtype=torch.float64)))
        chosen = torch.randperm(N, generator=generator)[:3]
        ops.append(("write_tables", chosen, torch.randn(3, I, D, generator=generator, dtype=torch.float64)))
        columns = torch.randperm(I, generator=generator)[:2]
        ops.append(("write_columns", columns, torch.randn(2, D, generator=generator, dtype=torch.float64)))
    return ops


def _apply_plain(plain, op):
    name, *args = op
    if name == "write_rows":
        plain[args[0], args[1]] = args[2]
    elif name == "write_tables":
        plain[args[0]] = args[1]
    else:
        plain[:, args[0]] = args[1].unsqueeze(0)


def _apply_store(store, op):
    getattr(store, op[0])(*op[1:])


def _round_bf16(values):
    return values.to(torch.bfloat16).to(values.dtype)


@pytest.mark.parametrize("name", ["dense", "disk", "half", "global"])
def test_every_operation_matches_a_plain_tensor(name, tmp_path):
    generator = torch.Generator().manual_seed(3)
    start = torch.randn(I, D, generator=generator, dtype=torch.float64)
    store = build_store(name, start, N, tmp_path)
    # half stores every value rounded to bfloat16: the plain tensor is rounded where it is written
    rounded = _round_bf16 if name == "half" else (lambda values: values)
    plain = rounded(start).unsqueeze(0).repeat(N, 1, 1)
    clients, weights = torch.tensor([5, 0, 3, 6]), torch.tensor([0.5, -1.25, 2.0, 0.125], dtype=torch.float64)
    for op in _operations(generator):
        _apply_plain(plain, op)
        plain.copy_(rounded(plain))
        _apply_store(store, op)
        assert torch.equal(store.full(), plain), op[0]
        query_clients, query_items = torch.tensor([[1], [4]]), torch.tensor([[0, 10, 3], [2, 2, 7]])
        assert torch.equal(store.rows(query_clients, query_items), plain[query_clients, query_items])
        assert torch.equal(store.tables(clients), plain[clients])
        expected_sum = torch.einsum("m,mid->id", weights, plain[clients])
        # float64; global adds its changed rows to sum(w) * server in another order than the GEMV: 1e-13
        assert torch.allclose(store.weighted_sum(clients, weights), expected_sum, rtol=0, atol=1e-13)
        assert torch.allclose(store.mean(), plain.mean(0), rtol=0, atol=1e-15)
    table = torch.randn(I, D, generator=generator, dtype=torch.float64)
    store.blend_all(table, 0.0)
    assert torch.equal(store.full(), rounded(table).unsqueeze(0).expand(N, I, D))
    if name == "global":
        assert store.keys.numel() == 0  # one table again: no per-client rows are kept
        with pytest.raises(FedcaError, match="store=global holds one table"):
            store.blend_all(table, 0.25)
    else:
        store.write_rows(torch.tensor([2]), torch.tensor([4]), torch.ones(1, D, dtype=torch.float64))
        own = store.full().clone()
        store.blend_all(table, 0.25)
        assert torch.allclose(store.full(), rounded(0.25 * own + 0.75 * table.unsqueeze(0)), rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", ["dense", "disk", "half", "global"])
def test_a_stores_state_restores_it_into_a_fresh_store(name, tmp_path):
    generator = torch.Generator().manual_seed(4)
    start = torch.randn(I, D, generator=generator)
    store = build_store(name, start, N, tmp_path / "a")
    for op in _operations(generator):
        _apply_store(store, (op[0], *(arg.float() if arg.is_floating_point() else arg for arg in op[1:])))
    torch.save(store.state(), tmp_path / "state.pt")
    fresh = build_store(name, start, N, tmp_path / "b")
    fresh.load_state(torch.load(tmp_path / "state.pt", weights_only=True))
    assert torch.equal(fresh.full(), store.full())


def test_half_takes_half_the_memory_and_disk_lives_in_its_file(tmp_path):
    start = torch.randn(I, D)
    assert build_store("half", start, N, tmp_path).table.element_size() == 2
    disk = build_store("disk", start, N, tmp_path)
    assert (tmp_path / "items.store").stat().st_size == N * I * D * 4
    disk.write_rows(torch.tensor([6]), torch.tensor([10]), torch.full((1, D), 7.0))
    on_file = torch.from_file(str(tmp_path / "items.store"), size=N * I * D, dtype=torch.float32).view(N, I, D)
    assert torch.equal(on_file[6, 10], torch.full((D,), 7.0))


def test_auto_takes_global_for_one_table_methods_else_dense_until_the_budget_then_disk():
    gib = 2 ** 30
    assert choose_store(StoreConfig(name="auto"), 100, 10, 4, torch.float32, one_table=True) == "global"
    assert choose_store(StoreConfig(name="auto", budget_gb=1.0), gib // 16, 1, 4, torch.float32,
                        one_table=False) == "dense"  # exactly 1 GiB
    assert choose_store(StoreConfig(name="auto", budget_gb=1.0), gib // 16 + 1, 1, 4, torch.float32,
                        one_table=False) == "disk"
    with pytest.raises(FedcaError, match="store=global holds one table"):
        choose_store(StoreConfig(name="global"), 10, 10, 4, torch.float32, one_table=False)
