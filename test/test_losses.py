"""Loss terms on hand cases."""
import math

import pytest
import torch

from bifusion_core.losses.terms import (alignment_loss, dice_loss, grad_scale, knn_indices, merge_loss,
                                        noview_pseudo_label_loss, softmax_focal_loss,
                                        spatial_consistency_loss, stage_weights, weighted_bce)


def test_focal_loss_hand_value():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    target = torch.tensor([0, 2])  # query 0 -> class 0, query 1 -> "no object" (index 2)
    p = torch.softmax(logits, 1)
    p0, p1 = float(p[0, 0]), float(p[1, 2])
    fl0 = (1 - p0) ** 2 * -math.log(p0)
    fl1 = (1 - p1) ** 2 * -math.log(p1)
    expected = (1.0 * fl0 + 0.25 * fl1) / 1.25
    assert abs(float(softmax_focal_loss(logits, target, no_object=2)) - expected) < 1e-6
    # gamma 0, alpha 1 -> plain cross-entropy
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert abs(float(softmax_focal_loss(logits, target, 2, alpha=1.0, gamma=0.0)) - float(ce)) < 1e-6
    # a confident correct prediction costs (almost) nothing
    assert float(softmax_focal_loss(torch.tensor([[20.0, 0.0, 0.0]]), torch.tensor([0]), 2)) < 1e-12


def test_dice_of_identical_masks_is_zero_and_disjoint_near_one():
    t = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    big = torch.where(t > 0, 30.0, -30.0)
    assert float(dice_loss(big, t)) < 1e-6
    assert float(dice_loss(-big, t)) > 0.6
    assert float(weighted_bce(big, t)) < 1e-6
    # weights: a wrong superpoint with weight 0 costs nothing
    logits = torch.tensor([[30.0, 30.0, 30.0, -30.0]])
    assert float(weighted_bce(logits, t, torch.tensor([1.0, 1.0, 0.0, 1.0]))) < 1e-6
    assert float(weighted_bce(logits, t, torch.tensor([1.0, 1.0, 1.0, 1.0]))) > 5


def test_alignment_gradient_on_2d_side_is_five_percent():
    torch.manual_seed(0)
    f2d = torch.randn(10, 8, requires_grad=True)
    f3d = torch.randn(10, 8, requires_grad=True)
    valid = torch.ones(10, dtype=torch.bool)
    valid[3] = False
    loss = alignment_loss(f2d, f3d, valid)
    loss.backward()
    # reference: the same loss without the gradient scale
    a, b = f2d.detach().clone().requires_grad_(True), f3d.detach().clone().requires_grad_(True)
    cos = torch.nn.functional.cosine_similarity(a[valid], b[valid], dim=1)
    ref = -torch.log(torch.sigmoid(cos / 0.07) + 1e-8).mean()
    ref.backward()
    assert abs(float(loss.detach()) - float(ref.detach())) < 1e-6
    torch.testing.assert_close(f2d.grad, 0.05 * a.grad)
    torch.testing.assert_close(f3d.grad, b.grad)
    assert float(f2d.grad[3].abs().sum()) == 0.0


def test_grad_scale_value_unchanged():
    x = torch.randn(4, requires_grad=True)
    y = grad_scale(x, 0.1)
    assert torch.equal(y, x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((4,), 0.1))


def test_schedule_boundaries():
    assert stage_weights(0.0) == stage_weights(0.2999) == (0.3, 0.4, 0.2, 0.1)
    assert stage_weights(0.3) == stage_weights(0.6999) == (0.4, 0.5, 0.08, 0.02)
    assert stage_weights(0.7) == stage_weights(1.0) == (0.45, 0.5, 0.04, 0.01)


def test_knn_and_spatial_consistency():
    pts = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [5.0, 0, 0], [5.1, 0, 0]])
    batch = torch.tensor([0, 0, 0, 1])
    nn = knn_indices(pts, 1, batch)
    assert nn.squeeze(1).tolist() == [1, 0, 1, 3]  # sample 1 has one point: itself
    f = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]]), dim=1)
    assert float(spatial_consistency_loss(f, torch.tensor([[1], [0], [3], [2]]))) < 1e-6
    assert abs(float(spatial_consistency_loss(f, torch.tensor([[2], [2], [0], [0]]))) - 1.0) < 1e-6


def test_noview_pseudo_labels_from_confident_neighbours():
    logits = torch.tensor([[0.0, 0.0], [5.0, 0.0], [5.0, 0.0], [0.0, 0.1]], requires_grad=True)
    valid = torch.tensor([False, True, True, True])
    knn = torch.tensor([[1, 2], [0, 2], [0, 1], [0, 0]])
    loss = noview_pseudo_label_loss(logits, valid, knn, confidence=0.8)
    assert abs(float(loss) - math.log(2)) < 1e-6  # point 0 learns class 0 from points 1 and 2
    loss.backward()
    assert logits.grad[0, 0] < 0 and logits.grad[1:].abs().sum() == 0
    # no confident neighbour -> zero loss
    assert float(noview_pseudo_label_loss(logits, valid, torch.tensor([[3, 3]] * 4))) == 0.0


@pytest.mark.parametrize("p", [0.0, 0.5, 0.9])
def test_schedule_sums_are_positive(p):
    assert all(w > 0 for w in stage_weights(p))


def test_matching_prefers_the_superpoint_query_seeded_inside_the_instance():
    from bifusion_core.losses.matcher import MatcherConfig, hungarian_match

    # 3 superpoints, queries 0-2 seeded by them, query 3 learnable; query 0 (seeded outside the instance) is
    # slightly more confident of the class, everything else equal
    cls = torch.zeros(4, 3)
    cls[0, 1] = 0.5
    masks = torch.zeros(4, 3)
    labels = torch.tensor([1])
    gt = torch.tensor([[0.0, 1.0, 0.2]])  # the instance holds superpoint 1 (and a fifth of superpoint 2)
    qi, gi = hungarian_match(cls, masks, labels, gt, MatcherConfig(), n_seed_queries=3)
    assert qi.tolist() == [1] and gi.tolist() == [0]
    qi, _ = hungarian_match(cls, masks, labels, gt, MatcherConfig(cost_seed=0.0), n_seed_queries=3)
    assert qi.tolist() == [0]  # without the seed prior the class cost decides
    with pytest.raises(ValueError, match="seeded"):
        hungarian_match(cls, masks, labels, gt, MatcherConfig(), n_seed_queries=5)
    # a learnable query with a clearly better mask still wins over a seeded one with a poor mask
    masks2 = torch.full((4, 3), -8.0)
    masks2[3] = torch.tensor([-8.0, 8.0, -2.0])
    cls2 = torch.zeros(4, 3)
    cls2[3, 1] = 5.0
    qi, _ = hungarian_match(cls2, masks2, labels, gt, MatcherConfig(), n_seed_queries=3)
    assert qi.tolist() == [3]


def test_merge_loss_hand_value():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ids_a = torch.tensor([5, 7])
    b = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    ids_b = torch.tensor([7, 5, 9])  # 9 has no partner in a
    # logits / 0.5: a0 . b = [2, 1.2, 0], a1 . b = [0, 1.6, 2]
    e = math.exp
    a_to_b = [-math.log(e(1.2) / (e(2) + e(1.2) + 1)),   # a0 (id 5) -> b1
              -math.log(1 / (1 + e(1.6) + e(2)))]        # a1 (id 7) -> b0
    b_to_a = [-math.log(1 / (e(2) + 1)),                 # b0 (id 7) over a: [2, 0] -> a1
              -math.log(e(1.2) / (e(1.2) + e(1.6)))]     # b1 (id 5) over a: [1.2, 1.6] -> a0
    expected = sum(a_to_b + b_to_a) / 4
    assert abs(float(merge_loss(a, ids_a, b, ids_b, tau=0.5)) - expected) < 1e-6
    assert abs(float(merge_loss(a, ids_a, b, ids_b, tau=0.5, reduction="sum")) - 4 * expected) < 1e-5
    # symmetric in the two frames
    assert abs(float(merge_loss(b, ids_b, a, ids_a, tau=0.5)) - expected) < 1e-6
    # no common instance: a zero that keeps the graph
    ea = a.clone().requires_grad_(True)
    zero = merge_loss(ea, torch.tensor([1, 2]), b, ids_b)
    assert float(zero) == 0.0 and zero.requires_grad
    zero.backward()
    assert float(ea.grad.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="unique"):
        merge_loss(a, torch.tensor([5, 5]), b, ids_b)


def test_merge_loss_falls_as_matching_embeddings_get_closer():
    g = torch.Generator().manual_seed(0)
    ea = torch.nn.functional.normalize(torch.randn(6, 16, generator=g), dim=1)
    noise = torch.nn.functional.normalize(torch.randn(6, 16, generator=g), dim=1)
    ids_a = torch.arange(6)
    ids_b = torch.tensor([3, 0, 5, 1, 4, 2])  # frame b sees the same six objects in another order
    losses = []
    for lam in (0.0, 0.2, 0.4, 0.6):
        eb = torch.nn.functional.normalize((1 - lam) * noise + lam * ea[ids_b], dim=1)
        losses.append(float(merge_loss(ea, ids_a, eb, ids_b)))
    assert all(x > y for x, y in zip(losses, losses[1:])), losses
    # and a gradient step on the embeddings lowers it
    eb = torch.nn.functional.normalize(noise, dim=1).requires_grad_(True)
    before = merge_loss(ea, ids_a, eb, ids_b)
    before.backward()
    after = merge_loss(ea, ids_a, (eb - 0.5 * eb.grad).detach(), ids_b)
    assert float(after) < float(before)
