"""pFedGraph and PFedRec: server steps against transcriptions of docs/methods/pfedgraph.md and pfedrec.md, the
anchor pull's gradient against autograd, PFedRec's batched local training against a plain
per-client SGD loop, and one property each that FedAvg would not have."""

import numpy as np
import pytest
import torch

from fedca.aggregators.base import Anchors, RoundContext, Uploads
from fedca.aggregators.pfedgraph import PFedGraph
from fedca.aggregators.pfedrec import PFedRec
from fedca.config.compose import compose_run_config
from fedca.data.fed_data import load_fed_data
from fedca.federation.batches import EpochShuffle, build_round
from fedca.federation.local_train import Step, local_train
from fedca.federation.pull import AnchorPull
from fedca.federation.population import Population
from fedca.federation.merge import apply_downloads
from fedca.federation.store import DenseStore
from fedca.models.backbones import build_backbone
from fedca.run import simulation_settings
from fedca.seeding import generator

from qp_reference import slsqp_simplex_qp


def _participants(tables):
    """(store, clients) for AnchorPull: participants 0..n-1 holding ``tables`` [n, I, d]."""
    return DenseStore(tables), torch.arange(tables.shape[0])


def _population(n=6, items=9, dim=4, mlp=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Population(user=torch.randn(n, dim, generator=gen, dtype=torch.float64),
                      items=torch.randn(n, items, dim, generator=gen, dtype=torch.float64),
                      mlp=torch.randn(n, mlp, generator=gen, dtype=torch.float64))


def _uploads(population, sizes):
    return Uploads(population, torch.arange(population.num_clients), torch.tensor(sizes), torch.arange(0),
                   torch.arange(0))


def _context():
    return RoundContext(round=0, weights={}, generator=torch.Generator().manual_seed(0))


def _pfedgraph_reference(thetas, theta0, sizes, alpha):
    """Per-client loops of the pFedGraph server: cosines of updates, the row QP by SLSQP,
    personal blocks and anchors."""
    n = len(thetas)
    deltas = [t - theta0 for t in thetas]
    p = np.array(sizes, dtype=float) / sum(sizes)
    graph = np.zeros((n, n))
    for i in range(n):
        d = np.array([-(deltas[i] @ deltas[j]) / (np.linalg.norm(deltas[i]) * np.linalg.norm(deltas[j]))
                      for j in range(n)])
        d[d < -0.9] = -1.0
        # min alpha x^T x + (d - 2 alpha p)^T x  ==  min x^T x + ((d - 2 alpha p) / alpha)^T x
        graph[i] = slsqp_simplex_qp((d - 2 * alpha * p) / alpha)
    blocks = [sum(graph[i, j] * thetas[j] for j in range(n)) for i in range(n)]
    anchors = [sum(graph[i, j] * thetas[j] / np.linalg.norm(thetas[j]) for j in range(n)) for i in range(n)]
    return graph, blocks, anchors


def test_pfedgraph_server_step_matches_a_transcription_of_the_equations():
    population = _population()
    items0, mlp0 = torch.randn(9, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    sizes = [10, 25, 5, 40, 15, 30]
    aggregator = PFedGraph(alpha=0.8, lam=0.01)
    downloads, state = aggregator.aggregate(_uploads(population, sizes), aggregator.start(items0, mlp0), _context())
    thetas = [np.concatenate([population.items[i].reshape(-1).numpy(), population.mlp[i].numpy()]) for i in range(6)]
    theta0 = np.concatenate([items0.reshape(-1).numpy(), mlp0.numpy()])
    graph, blocks, anchors = _pfedgraph_reference(thetas, theta0, sizes, 0.8)
    got_blocks = torch.cat([downloads.items.reshape(6, -1), downloads.mlp], 1).numpy()
    got_anchors = torch.cat([state["anchor_items"].reshape(6, -1), state["anchor_mlp"]], 1).numpy()
    assert np.abs(got_blocks - np.stack(blocks)).max() <= 1e-6
    assert np.abs(got_anchors - np.stack(anchors)).max() <= 1e-6
    assert downloads.kind == "personal" and downloads.keep_local == 0.0


def test_pfedgraph_weights_follow_update_similarity():
    population = _population(n=4)
    items0, mlp0 = population.items.mean(0), population.mlp.mean(0)
    population.items[1] = population.items[0] + 1e-3 * torch.randn(9, 4, dtype=torch.float64)
    population.mlp[1] = population.mlp[0]
    aggregator = PFedGraph(alpha=0.8)
    downloads, _ = aggregator.aggregate(_uploads(population, [1, 1, 1, 1]), aggregator.start(items0, mlp0),
                                        _context())
    pulled_to_twin = (downloads.items[0] - population.items[1]).norm() < (downloads.items[2] - population.items[1]).norm()
    assert pulled_to_twin
    assert not torch.allclose(downloads.items[0], downloads.items[2])  # FedAvg would send one block


def test_anchor_pull_gradient_equals_autograd_on_the_trained_rows():
    gen = torch.Generator().manual_seed(4)
    n, items, dim, mlp_size = 3, 7, 4, 5
    full = torch.randn(n, items, dim, generator=gen, dtype=torch.float64)
    kappa = Anchors(items=torch.randn(n, items, dim, generator=gen, dtype=torch.float64),
                    mlp=torch.randn(n, mlp_size, generator=gen, dtype=torch.float64), strength=0.3, sign=-1)
    mlp = torch.randn(n, mlp_size, generator=gen, dtype=torch.float64)
    row_owner = torch.tensor([0, 0, 1, 1, 1, 2])
    row_items = torch.tensor([1, 4, 0, 2, 6, 3])
    table = full[row_owner, row_items].clone()
    pull = AnchorPull(kappa, *_participants(full), row_owner, row_items, table, mlp)
    table = table + 0.1  # the rows moved during training
    table_grad, mlp_grad = torch.zeros_like(table), torch.zeros_like(mlp)
    active = torch.tensor([0, 2])  # client 1 stopped early
    step = Step(active=active, active_dev=active, rows=torch.zeros(2, 1, dtype=torch.long), target=None,
                weight=None, row_runs=[], client_runs=[], step_tensors={}, busy_clients=3, busy_rows=6)
    pull.add_grads(table, mlp, table_grad, mlp_grad, step)

    leaf_rows, leaf_mlp = table.clone().requires_grad_(True), mlp.clone().requires_grad_(True)
    current = full.clone()
    current[row_owner, row_items] = 0.0
    current = current.index_put((row_owner, row_items), leaf_rows)  # [n, I, d] with the trained rows as leaves
    theta = torch.cat([current.reshape(n, -1), leaf_mlp], 1)
    anchor = torch.cat([kappa.items.reshape(n, -1), kappa.mlp], 1)
    term = -0.3 * ((anchor * theta).sum(1) / theta.norm(dim=1))
    term[active].sum().backward()
    assert torch.allclose(table_grad, leaf_rows.grad, atol=1e-12)
    assert torch.allclose(mlp_grad, leaf_mlp.grad, atol=1e-12)
    assert float(table_grad[2:5].abs().max()) == 0.0  # the stopped client's rows get no pull


def test_pfedrec_server_averages_item_tables_without_weights_and_defers_the_download():
    population = _population()
    before = population.items.clone()
    aggregator = PFedRec()
    downloads, state = aggregator.aggregate(_uploads(population, [1, 50, 2, 9, 3, 7]),
                                            aggregator.start(population.items[0], population.mlp[0]), _context())
    assert torch.allclose(state["items"], before.mean(0), atol=1e-12)
    apply_downloads(population, downloads)
    assert torch.equal(population.items, before)  # clients are evaluated with their own tables
    participants = torch.tensor([1, 4])
    own_mlp = population.mlp.clone()
    apply_downloads(population, aggregator.before_training(participants, state, round_index=1))
    assert torch.equal(population.items[1], state["items"]) and torch.equal(population.items[4], state["items"])
    assert torch.equal(population.items[0], before[0])
    assert torch.equal(population.mlp, own_mlp)  # the score function never leaves the client


@pytest.fixture(scope="module")
def slice_20(tiny_data_env):
    cfg = compose_run_config(tiny_data_env)
    return load_fed_data(cfg.dataset, cfg.protocol, seed=0).subset_users(20)


def _sgd_oracle(population, batches, backbone_lr, item_lr, order):
    """One epoch of PFedRec's local training, client by client with two torch.optim.SGD."""
    for position, client in enumerate(batches.clients.tolist()):
        weight = torch.nn.Parameter(population.user[client].clone())
        bias = torch.nn.Parameter(population.mlp[client].clone())
        table = torch.nn.Parameter(population.items[client].clone())
        head = torch.optim.SGD([weight, bias], lr=backbone_lr)
        embedding = torch.optim.SGD([table], lr=item_lr)
        start, end = int(batches.offsets[position]), int(batches.offsets[position + 1])
        mine = order[start:end]
        for first in range(0, end - start, batches.batch_size):
            instances = mine[first: first + batches.batch_size]
            labels = batches.labels[instances].to(table.dtype)
            for optimizer in (head, embedding):
                optimizer.zero_grad()
                scores = torch.sigmoid(table[batches.items[instances]] @ weight + bias)
                torch.nn.functional.binary_cross_entropy(scores, labels).backward()
                optimizer.step()
        population.user[client], population.mlp[client] = weight.detach(), bias.detach()
        population.items[client] = table.detach()


def test_pfedrec_batched_local_training_matches_a_per_client_sgd_loop(slice_20):
    cfg = compose_run_config(["model=pfedrec", "agg=pfedrec", "batch_size=64"])
    settings = simulation_settings(cfg).local
    backbone = build_backbone("pfedrec", [], cfg.model.latent_dim)
    start = Population.initial(slice_20.num_users, slice_20.num_items, cfg.model.latent_dim, backbone,
                               init="official", user_init="shared", generator=generator(0, "init"),
                               device=torch.device("cpu"))
    start = Population(user=start.user.double(), items=start.items.double(), mlp=start.mlp.double())
    batches = build_round(slice_20, torch.arange(slice_20.num_users), 4, 64, generator(0, "train_negatives"))
    engine = Population(user=start.user.clone(), items=start.items.clone(), mlp=start.mlp.clone())
    local_train(engine, batches, backbone, settings, generator(0, "shuffle"))
    oracle = Population(user=start.user.clone(), items=start.items.clone(), mlp=start.mlp.clone())
    item_lr = settings.lr_embedding * slice_20.num_items * settings.item_lr_eta
    _sgd_oracle(oracle, batches, settings.lr_structure, item_lr, EpochShuffle(batches).order(generator(0, "shuffle")))
    assert float((engine.items - start.items).abs().max()) > 1e-2
    for name in ("user", "items", "mlp"):
        scale = max(1.0, float(getattr(oracle, name).abs().max()))  # item rows reach ~1e3 at lr ~1e4
        assert float((getattr(engine, name) - getattr(oracle, name)).abs().max()) <= 1e-8 * scale
