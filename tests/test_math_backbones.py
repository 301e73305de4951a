"""Backbone score functions, losses and initialisers (models/backbones.py) on values worked out by hand."""

import math

import pytest
import torch

from fedca.models.backbones import (FCF, NCF, Backbone, ItemGrads, NonFiniteScores, PFedRecHead,
                                    bce_and_logit_grad, binary_cross_entropy, build_backbone, checked_sigmoid)


def test_checked_sigmoid_counts_the_clients_with_a_nan_score():
    logits = torch.tensor([[0.0, math.nan], [1.0, 2.0], [math.nan, math.nan]])
    with pytest.raises(NonFiniteScores, match="non-finite scores for 2 clients") as caught:
        checked_sigmoid(logits)
    assert caught.value.clients == 2
    assert checked_sigmoid(torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)).tolist() == [[0.5, 0.75]]


def test_bce_is_minus_the_log_of_the_probability_of_the_label():
    prob = torch.tensor([[0.5, 0.75, 0.25]], dtype=torch.float64)
    target = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    # -ln 0.5, -ln(1 - 0.75), -ln 0.25
    torch.testing.assert_close(binary_cross_entropy(prob, target),
                               torch.tensor([[math.log(2), math.log(4), math.log(4)]], dtype=torch.float64),
                               rtol=0, atol=1e-15)
    # certain and wrong: log 0 clamped at -100 either way
    assert binary_cross_entropy(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])).tolist() == [100.0, 100.0]


def test_bce_logit_gradient_is_weight_times_p_minus_y():
    logits = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)  # p = 0.5, 0.75
    target = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    weight = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    loss, grad = bce_and_logit_grad(logits, target, weight)
    torch.testing.assert_close(loss, torch.tensor([[math.log(2), math.log(4)]], dtype=torch.float64), rtol=0, atol=1e-15)
    # 2 * (0.5 - 1) = -1 and 1 * (0.75 - 0) = 0.75
    torch.testing.assert_close(grad, torch.tensor([[-1.0, 0.75]], dtype=torch.float64), rtol=0, atol=1e-15)


def test_bce_logit_gradient_vanishes_where_the_sigmoid_saturates():
    # sigmoid(40) rounds to 1 in float64: p (1 - p) = 0, so PyTorch's backward gives 0, not (p - y)
    _, grad = bce_and_logit_grad(torch.tensor([[40.0]], dtype=torch.float64), torch.tensor([[0.0]], dtype=torch.float64),
                                 torch.tensor([[1.0]], dtype=torch.float64))
    assert grad.tolist() == [[0.0]]
    # a tiny slope is used as it is, not clamped: p (1 - p) = 1e-13 < 1e-12 gives ((p - y) / 1e-12) * 1e-13
    logit = torch.tensor([[-math.log(1e13)]], dtype=torch.float64)
    p = float(torch.sigmoid(logit))
    _, grad = bce_and_logit_grad(logit, torch.tensor([[1.0]], dtype=torch.float64), torch.tensor([[1.0]], dtype=torch.float64))
    assert float(grad) == pytest.approx((p - 1) / 1e-12 * (p * (1 - p)), rel=1e-12)


def test_item_grads_dense_or_rank_one():
    dense = torch.arange(12.0).reshape(2, 3, 2)
    grads = ItemGrads(dense=dense)
    assert grads.full() is dense and torch.equal(grads.part(1, 2).full(), dense[1:2])
    logit = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]])
    user = torch.tensor([[1.0, 10.0], [2.0, 4.0]])
    rank_one = ItemGrads(logit=logit, user=user)
    # entry [a, b, :] = logit[a, b] * user[a]
    assert rank_one.full()[0, 2].tolist() == [3.0, 30.0] and rank_one.full()[1, 1].tolist() == [-2.0, -4.0]
    part = rank_one.part(1, 2)
    assert part.dense is None and torch.equal(part.full(), rank_one.full()[1:2])


def test_fcf_score_is_the_dot_product():
    user = torch.tensor([[1.0, 2.0]])
    items = torch.tensor([[[1.0, 0.0], [3.0, -1.0], [0.5, 0.25]]])
    assert FCF().score(user, items).tolist() == [[1.0, 1.0, 1.0]]
    assert FCF().mlp_size() == 0 and FCF().init_mlp(torch.Generator()).numel() == 0
    assert FCF.rank_one_item_grads and not Backbone.rank_one_item_grads


def test_fcf_gradients_by_hand():
    user = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    items = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]], dtype=torch.float64)  # logits 0, ln 3
    target = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    weight = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    loss, grad_user, grad_items, grad_mlp = FCF().loss_and_grads(user, items, None, target, weight)
    # d/dlogit = (-1, 0.75); d/du = -1 * (0, 0) + 0.75 * (ln 3, 0)
    torch.testing.assert_close(grad_user, torch.tensor([[0.75 * math.log(3.0), 0.0]], dtype=torch.float64),
                               rtol=0, atol=1e-15)
    torch.testing.assert_close(grad_items.full(), torch.tensor([[[-1.0, -2.0], [0.75, 1.5]]], dtype=torch.float64),
                               rtol=0, atol=1e-15)
    assert grad_mlp is None and grad_items.user is user


def test_pfedrec_head_adds_its_bias_and_differentiates_it():
    head = PFedRecHead(dim=4)
    assert head.bound == 0.5 and head.mlp_size() == 1
    user = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    items = torch.tensor([[[0.0, 0, 0, 0], [math.log(3.0) + 1, 0, 0, 0]]], dtype=torch.float64)
    bias = torch.tensor([[-1.0]], dtype=torch.float64)
    logits = head.score(user, items, bias)
    torch.testing.assert_close(logits, torch.tensor([[-1.0, math.log(3.0)]], dtype=torch.float64), rtol=0, atol=1e-15)
    target = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    _, grad_user, _, grad_bias = head.loss_and_grads(user, items, bias, target, torch.ones(1, 2, dtype=torch.float64))
    p0 = 1 / (1 + math.e)  # sigmoid(-1)
    # d/db = sum of (p - y) = p0 + 0.75; d/dw = 0.75 * (ln 3 + 1, 0, 0, 0)
    assert float(grad_bias) == pytest.approx(p0 + 0.75, abs=1e-15) and grad_bias.shape == (1, 1)
    assert grad_user[0].tolist() == pytest.approx([0.75 * (math.log(3.0) + 1), 0, 0, 0], abs=1e-15)


def test_pfedrec_head_initialises_like_a_linear_layer():
    head = PFedRecHead(dim=4)
    generator = torch.Generator().manual_seed(3)
    bias = head.init_mlp(generator)
    user = head.init_user(2, 4, 99.0, generator)  # std is not used: U(-1/2, 1/2) like Linear(4, 1)
    reference = torch.Generator().manual_seed(3)
    expected_bias = (torch.rand(1, generator=reference) * 2 - 1) * 0.5
    expected_user = (torch.rand(2, 4, generator=reference) * 2 - 1) * 0.5
    assert torch.equal(bias, expected_bias) and torch.equal(user, expected_user)


def test_default_user_init_is_gaussian_with_the_given_std():
    generator = torch.Generator().manual_seed(5)
    user = Backbone().init_user(3, 2, 0.25, generator)
    assert torch.equal(user, torch.randn(3, 2, generator=torch.Generator().manual_seed(5)) * 0.25)
    assert Backbone().mlp_size() == 0 and Backbone().init_mlp(generator).numel() == 0
    with pytest.raises(NotImplementedError):
        Backbone().score(user, user.unsqueeze(1), None)


# NCF with layers 4 -> 2 -> 1 and d = 2: W1 [2, 4] picks u_0 and -v_1, b1 = (0.5, 0); W2 = (2, 3), b2 = -1
NCF_MLP = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, -1, 0.5, 0.0, 2.0, 3.0, -1.0]], dtype=torch.float64)


def test_ncf_layout_and_size():
    ncf = NCF([4, 2, 1])
    assert ncf.mlp_size() == 2 * 4 + 2 + 1 * 2 + 1
    assert ncf.layout() == [(4, 2, 0, 8), (2, 1, 10, 12)]
    (w1, b1), (w2, b2) = ncf.unflatten(NCF_MLP)
    assert w1.shape == (1, 2, 4) and w1[0, 1].tolist() == [0, 0, 0, -1] and b1.tolist() == [[0.5, 0.0]]
    assert w2.tolist() == [[[2.0, 3.0]]] and b2.tolist() == [[-1.0]]


def test_ncf_score_runs_the_mlp_with_relu_between_layers():
    user = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    items = torch.tensor([[[3.0, 4.0], [0.0, -2.0]]], dtype=torch.float64)
    # item 0: x = (1, 2, 3, 4), hidden = (1 + 0.5, -4) -> relu (1.5, 0), out = 2 * 1.5 + 0 - 1 = 2
    # item 1: x = (1, 2, 0, -2), hidden = (1.5, 2), out = 3 + 6 - 1 = 8
    assert NCF([4, 2, 1]).score(user, items, NCF_MLP).tolist() == [[2.0, 8.0]]


def test_ncf_autograd_gradient_of_the_last_bias_is_the_logit_gradient_sum():
    user = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    items = torch.tensor([[[3.0, 4.0], [0.0, -2.0]]], dtype=torch.float64)  # logits 2 and 8
    target = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    loss, grad_user, grad_items, grad_mlp = NCF([4, 2, 1]).loss_and_grads(
        user, items, NCF_MLP, target, torch.ones(1, 2, dtype=torch.float64))
    p = [1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-8))]
    torch.testing.assert_close(loss, torch.tensor([[-math.log(p[0]), -math.log(1 - p[1])]], dtype=torch.float64),
                               rtol=1e-14, atol=0)
    assert float(grad_mlp[0, 12]) == pytest.approx((p[0] - 1) + p[1], abs=1e-15)
    assert grad_items.dense.shape == (1, 2, 2) and grad_user.shape == (1, 2)


def test_ncf_initialises_each_layer_like_a_linear_layer():
    ncf = NCF([4, 2, 1])
    out = ncf.init_mlp(torch.Generator().manual_seed(8))
    reference = torch.Generator().manual_seed(8)
    parts = [(torch.rand(8, generator=reference) * 2 - 1) * 0.5,  # weight 2 x 4, bound 1 / sqrt(4)
             (torch.rand(2, generator=reference) * 2 - 1) * 0.5,
             (torch.rand(2, generator=reference) * 2 - 1) * (1 / math.sqrt(2)),  # layer 2 -> 1
             (torch.rand(1, generator=reference) * 2 - 1) * (1 / math.sqrt(2))]
    assert torch.equal(out, torch.cat(parts))


def test_build_backbone_by_name():
    assert type(build_backbone("fcf", [])) is FCF
    ncf = build_backbone("ncf", [4, 2, 1])
    assert type(ncf) is NCF and ncf.layers == [4, 2, 1]
    head = build_backbone("pfedrec", [], dim=16)
    assert type(head) is PFedRecHead and head.bound == 0.25
    with pytest.raises(ValueError, match="unknown backbone 'mf'"):
        build_backbone("mf", [])


def test_ncf_scores_each_client_with_its_own_user_vector():
    # two clients, B = 3 items, d = 2 (so B != d), the same MLP
    user = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    items = torch.tensor([[[3.0, 4.0], [0.0, -2.0], [1.0, 1.0]]] * 2, dtype=torch.float64)
    mlp = NCF_MLP.expand(2, -1)
    # client 0, item (1, 1): hidden (1 + 0.5, -1) -> (1.5, 0), out 2; client 1 (user 0): hidden (0.5 + v_0 * 0, -v_1)
    # item (3, 4): (0.5, -4) -> 2 * 0.5 - 1 = 0; (0, -2): (0.5, 2) -> 1 + 6 - 1 = 6; (1, 1): (0.5, -1) -> 0
    assert NCF([4, 2, 1]).score(user, items, mlp).tolist() == [[2.0, 8.0, 2.0], [0.0, 6.0, 0.0]]


def test_ncf_layout_offsets_run_on_over_three_layers():
    # widths 6-4-2-1: weights 24 + biases 4, then 8 + 2, then 2 + 1
    assert NCF([6, 4, 2, 1]).layout() == [(6, 4, 0, 24), (4, 2, 28, 36), (2, 1, 38, 40)]
    assert NCF([6, 4, 2, 1]).mlp_size() == 41


def test_ncf_last_layer_has_no_relu_so_logits_go_negative():
    user = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    items = torch.tensor([[[3.0, 4.0]]], dtype=torch.float64)
    mlp = NCF_MLP.clone()
    mlp[0, -1] = -10.0  # last bias: item 0's output 2 * 1.5 + 0 - 10 = -7
    assert NCF([4, 2, 1]).score(user, items, mlp).tolist() == [[-7.0]]


def test_generic_autograd_path_returns_no_mlp_gradient_without_an_mlp():
    class Dot(Backbone):  # a backbone without its own gradients; its (empty) MLP enters the score
        def score(self, user, items, mlp):
            return torch.einsum("abd,ad->ab", items, user) + mlp.sum(1, keepdim=True)

    user = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    items = torch.tensor([[[0.5, -0.25]]], dtype=torch.float64)
    weight = torch.ones(1, 1, dtype=torch.float64)
    loss, grad_user, grad_items, grad_mlp = Dot().loss_and_grads(user, items, torch.zeros(1, 0, dtype=torch.float64),
                                                                 torch.ones(1, 1, dtype=torch.float64), weight)
    assert grad_mlp is None
    p = 1 / (1 + math.exp(-0.0))  # logit 0.5 - 0.5 = 0
    assert loss.tolist() == [[-math.log(p)]]
    torch.testing.assert_close(grad_user, (p - 1) * items[:, 0], rtol=0, atol=1e-15)


def test_build_backbone_gives_the_pfedrec_head_a_latent_dim_of_16_by_default():
    assert build_backbone("pfedrec", []).bound == 0.25
