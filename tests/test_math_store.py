"""Client stores' operations (fedca/federation/store.py) against a plain [N, I, d] tensor operated
on with indexing, their state round trips and store=auto's pick (the fast tests mutation testing runs)."""

import shutil
from pathlib import Path

import pytest
import torch

import fedca.federation.store as store_module
from fedca.errors import FedcaError
from fedca.federation.store import (StoreConfig, budget_bytes, build_store, check_disk_space, choose_store,
                                    saved_tables, table_bytes)

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


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("name", ["dense", "disk", "half", "global"])
def test_every_operation_matches_a_plain_tensor(name, chunk, tmp_path, monkeypatch):
    if chunk is not None:  # chunked steps (blends, sums, the disk store's fill) take 2 clients at a time
        monkeypatch.setattr(store_module, "CHUNK_VALUES", chunk * I * D)
    generator = torch.Generator().manual_seed(3)
    start = torch.randn(I, D, generator=generator, dtype=torch.float64)
    store = build_store(name, start, N, tmp_path / "nested" / "folder")
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
        everyone, every_item = torch.arange(N).unsqueeze(1), torch.arange(I).unsqueeze(0)
        assert torch.equal(store.rows(everyone, every_item), plain)  # every row, the last stored one too
        assert torch.equal(store.tables(clients), plain[clients])
        expected_sum = torch.einsum("m,mid->id", weights, plain[clients])
        # float64; global adds its changed rows to sum(w) * server in another order than the GEMV: 1e-13
        for given in (weights, weights.float()):  # float32 weights are exact here and cast to the store's dtype
            assert torch.allclose(store.weighted_sum(clients, given), expected_sum, rtol=0, atol=1e-13)
        assert torch.allclose(store.mean(), plain.mean(0), rtol=0, atol=1e-15)
    table = torch.randn(I, D, generator=generator, dtype=torch.float64)
    store.blend_all(table, 0.0)
    assert torch.equal(store.full(), rounded(table).unsqueeze(0).expand(N, I, D))
    changed = torch.randn(1, D, generator=generator, dtype=torch.float64)
    store.write_rows(torch.tensor([2]), torch.tensor([4]), changed)
    plain = rounded(table).unsqueeze(0).repeat(N, 1, 1)
    plain[2, 4] = rounded(changed[0])
    assert torch.equal(store.full(), plain)  # a write after a download starts from a clean record
    if name == "global":
        with pytest.raises(FedcaError, match="store=global holds one table"):
            store.blend_all(table, 0.25)
        store.blend_all(table, 0.0)
        assert store.keys.numel() == 0 and store.values.shape[0] == 0  # one table again: no per-client rows
    else:
        store.write_tables(torch.arange(N), torch.randn(N, I, D, generator=generator, dtype=torch.float64))
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


def test_a_saved_state_of_any_store_gives_back_every_table(tmp_path):
    generator = torch.Generator().manual_seed(5)
    start = torch.randn(I, D, generator=generator)
    for name in ("dense", "global"):
        store = build_store(name, start, N, tmp_path)
        store.write_rows(torch.tensor([6, 0]), torch.tensor([10, 3]), torch.randn(2, D, generator=generator))
        simulation = {"user": torch.zeros(N, 2), **store.state()}
        assert torch.equal(saved_tables(simulation), store.full()), name


def test_the_default_budget_is_half_the_physical_memory_and_table_bytes_count_every_value():
    total_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))
    # MemTotal is the kernel's total RAM in KiB, the same count as sysconf's pages
    assert budget_bytes(StoreConfig()) == total_kib * 1024 // 2
    assert budget_bytes(StoreConfig(budget_gb=0.5)) == 2 ** 29
    assert table_bytes(3, 5, 7, torch.float64) == 3 * 5 * 7 * 8 and table_bytes(3, 5, 7, torch.bfloat16) == 210
    assert choose_store(StoreConfig(name="auto", budget_gb=1.0), 2 ** 30 // 32, 1, 4, torch.float64,
                        one_table=False) == "dense"  # 8-byte values: exactly 1 GiB
    assert choose_store(StoreConfig(name="auto", budget_gb=1.0), 2 ** 30 // 16, 1, 4, torch.float64,
                        one_table=False) == "disk"


def test_auto_takes_global_for_one_table_methods_else_dense_until_the_budget_then_disk():
    gib = 2 ** 30
    assert choose_store(StoreConfig(name="auto"), 100, 10, 4, torch.float32, one_table=True) == "global"
    assert choose_store(StoreConfig(name="auto", budget_gb=1.0), gib // 16, 1, 4, torch.float32,
                        one_table=False) == "dense"  # exactly 1 GiB
    assert choose_store(StoreConfig(name="auto", budget_gb=1.0), gib // 16 + 1, 1, 4, torch.float32,
                        one_table=False) == "disk"
    with pytest.raises(FedcaError, match="store=global holds one table"):
        choose_store(StoreConfig(name="global"), 10, 10, 4, torch.float32, one_table=False)


def test_a_store_that_cannot_fit_stops_with_one_line_naming_the_setting(tmp_path):
    # 10^9 clients x 10^5 items x 16 float32 values: 6 PB, more than any memory or disk here
    with pytest.raises(FedcaError, match=r"store=dense needs .* GiB .* use store=disk, half or global"):
        choose_store(StoreConfig(name="dense"), 10 ** 9, 10 ** 5, 16, torch.float32, one_table=False)
    with pytest.raises(FedcaError, match=r"store=disk needs .* GiB .* free: set store.dir to a bigger disk"):
        build_store("disk", torch.zeros(10 ** 5, 16), 10 ** 9, tmp_path)
    assert not (tmp_path / "items.store").exists()  # refused before the file was made
    # the check itself on twice the free disk (called directly: a store that skipped it would fill the disk)
    with pytest.raises(FedcaError, match="store=disk needs"):
        check_disk_space(2 * shutil.disk_usage(tmp_path).free, tmp_path)
    check_disk_space(1 << 20, tmp_path)
    physical = 2 * budget_bytes(StoreConfig())
    fits = physical // (1 * 16 * 4)  # clients whose tables take exactly the machine's memory
    assert choose_store(StoreConfig(name="dense"), fits, 1, 16, torch.float32, one_table=False) == "dense"
    with pytest.raises(FedcaError, match="store=dense needs"):
        choose_store(StoreConfig(name="dense"), fits + 1, 1, 16, torch.float32, one_table=False)
