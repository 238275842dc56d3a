"""Query decoder shapes, matcher and post-processing on hand cases, open vocabulary."""
import pytest
import torch

from bifusion_core.losses.matcher import hungarian_match
from bifusion_core.models.decoder import DecoderConfig, QueryDecoder, SemanticHead, pad_superpoints
from bifusion_core.models.postprocess import PostprocessConfig, mask_nms, postprocess


def small_cfg(**kw):
    base = dict(d_model=32, n_heads=4, ffn_dim=64, n_layers=2, n_learnable_queries=3, num_classes=5)
    base.update(kw)
    return DecoderConfig(**base)


def test_decoder_shapes_with_different_superpoint_counts():
    torch.manual_seed(0)
    dec = QueryDecoder(small_cfg(in_dim=16))
    feats = [torch.randn(7, 16), torch.randn(4, 16)]
    centres = [torch.rand(7, 3), torch.rand(4, 3)]
    x, c, pad = pad_superpoints(feats, centres)
    out = dec(x, c, pad)
    assert out.class_logits.shape == (2, 7 + 3, 6)
    assert out.mask_logits.shape == (2, 10, 7)
    assert out.objectness.shape == (2, 10)
    assert len(out.aux) == 1
    assert out.query_pad[1, 4:7].all() and not out.query_pad[1, :4].any() and not out.query_pad[1, 7:].any()
    assert (out.mask_logits[1, :, 4:] < -1e3).all()  # padded superpoints never in a mask
    # padding does not change the real sample's prediction
    alone = dec(*pad_superpoints(feats[1:], centres[1:]))
    torch.testing.assert_close(alone.class_logits[0, :4], out.class_logits[1, :4], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(alone.class_logits[0, 4:], out.class_logits[1, 7:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(alone.mask_logits[0, :4, :4], out.mask_logits[1, :4, :4], atol=1e-5, rtol=1e-4)


def test_masks_map_back_to_points():
    sp_ids = torch.tensor([0, 0, 1, 2, 2, 2])
    mask_logits = torch.tensor([[5.0, -5.0, 5.0]])
    point_mask = mask_logits[0].sigmoid()[sp_ids] > 0.5
    assert point_mask.tolist() == [True, True, False, True, True, True]


def test_open_vocabulary_label_space_follows_prompts():
    torch.manual_seed(0)
    dec = QueryDecoder(small_cfg(open_vocab=True, in_dim=32))
    sem = SemanticHead(32, 5, open_vocab=True)
    x, c, pad = pad_superpoints([torch.randn(6, 32)], [torch.rand(6, 3)])
    t3, t7 = torch.randn(3, 256), torch.randn(7, 256)
    before = {k: v.clone() for k, v in dec.state_dict().items()}
    assert dec(x, c, pad, text=t3).class_logits.shape[-1] == 4
    assert dec(x, c, pad, text=t7).class_logits.shape[-1] == 8
    assert sem(torch.randn(10, 32), t7).shape == (10, 7)
    assert all(torch.equal(before[k], v) for k, v in dec.state_dict().items())
    # swapping two prompts swaps the two logit columns
    a = dec(x, c, pad, text=t3).class_logits[..., :3]
    b = dec(x, c, pad, text=t3[[1, 0, 2]]).class_logits[..., :3]
    torch.testing.assert_close(a[..., [1, 0, 2]], b)


def test_matcher_hand_case():
    gt_masks = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    gt_labels = torch.tensor([2, 0])
    big = 8.0
    # query 0 ~ gt 1, query 2 ~ gt 0, query 1 is junk
    mask_logits = torch.tensor([[-big, -big, big, big], [big, -big, big, -big], [big, big, -big, -big]])
    class_logits = torch.full((3, 4), -3.0)
    class_logits[0, 0] = class_logits[2, 2] = 3.0
    qi, gi = hungarian_match(class_logits, mask_logits, gt_labels, gt_masks)
    assert qi.tolist() == [0, 2] and gi.tolist() == [1, 0]
    qi, gi = hungarian_match(class_logits, mask_logits, gt_labels[:0], gt_masks[:0])
    assert qi.numel() == 0


def _two_objects():
    # 4 superpoints of 60 points each; superpoints 0,1 are object A, 2 is object B, 3 a 2-point speck
    sizes = [60, 60, 60, 2]
    sp_ids = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    pts = torch.cat([torch.full((n, 3), float(i)) for i, n in enumerate(sizes)])
    pts = pts + torch.rand(pts.shape, generator=torch.Generator().manual_seed(0)) * 0.1
    centres = torch.stack([pts[sp_ids == i].mean(0) for i in range(4)])
    return sp_ids, pts, centres


def test_postprocess_nms_drops_duplicate_and_min_size_drops_speck():
    sp_ids, pts, centres = _two_objects()
    B = 8.0
    mask_logits = torch.tensor([
        [B, B, -B, -B],    # A
        [B, B, -B, -B],    # duplicate of A, lower class prob
        [-B, -B, B, -B],   # B
        [-B, -B, -B, B],   # speck
    ])
    class_logits = torch.full((4, 3), -4.0)
    class_logits[0, 0], class_logits[1, 0], class_logits[2, 1], class_logits[3, 1] = 4.0, 2.0, 4.0, 4.0
    obj = torch.full((4,), 4.0)
    sem_logits = torch.zeros(len(sp_ids), 2)
    sem_logits[:, 0] = 5.0
    seg = postprocess(class_logits, mask_logits, obj, sem_logits, sp_ids, centres, pts, ["chair", "table"],
                      PostprocessConfig(min_points=10))
    assert [i.class_name for i in seg.instances] == ["chair", "table"]
    assert [i.point_count for i in seg.instances] == [120, 60]
    assert (seg.instance[sp_ids == 3] == -1).all()
    assert (seg.instance[sp_ids == 0] == 1).all() and (seg.instance[sp_ids == 2] == 2).all()
    s0 = seg.instances[0]
    expected = torch.softmax(class_logits[0], 0)[0] * torch.sigmoid(obj[0]) * torch.sigmoid(torch.tensor(B))
    assert abs(s0.score - float(expected)) < 1e-5
    lo, hi = pts[sp_ids <= 1].min(0).values, pts[sp_ids <= 1].max(0).values
    torch.testing.assert_close(s0.center, (lo + hi) / 2)
    torch.testing.assert_close(s0.size, hi - lo)


def test_mask_nms_keeps_disjoint():
    masks = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    keep = mask_nms(masks, torch.tensor([0.5, 0.9, 0.4]), torch.ones(3), 0.5)
    assert keep.tolist() == [1, 2]


def test_unconfident_superpoints_take_nearest_confident_label():
    sp_ids, pts, centres = _two_objects()
    sem = torch.zeros(len(sp_ids), 3)
    sem[sp_ids == 0, 2] = 6.0          # confident class 2
    sem[sp_ids == 2, 1] = 6.0          # confident class 1
    # superpoint 1 (centre ~1) unconfident: nearest confident is 0 (centre ~0) or 2 (centre ~2) -> tie-free
    centres[1] = centres[0] + 0.2
    cfg = PostprocessConfig(fill_radius=0.5, min_points=10)
    empty = torch.zeros(0, 4)
    seg = postprocess(torch.zeros(0, 4), empty, torch.zeros(0), sem, sp_ids, centres, pts, ["a", "b", "c"], cfg)
    assert (seg.semantic[sp_ids == 1] == 2).all()
    assert (seg.semantic[sp_ids == 3] == -1).all()  # speck at ~3, no confident neighbour within 0.5 m
    assert seg.instances == [] and (seg.instance == -1).all()


def test_instance_class_from_mask_pooled_semantics():
    sp_ids, pts, centres = _two_objects()
    B = 8.0
    mask_logits = torch.tensor([[B, B, -B, -B], [-B, -B, B, -B]])
    class_logits = torch.full((2, 3), -4.0)
    class_logits[:, 0] = 4.0  # the decoder says "chair" for both
    obj = torch.full((2,), 4.0)
    sem_logits = torch.zeros(len(sp_ids), 2)
    sem_logits[sp_ids <= 1, 0] = 3.0   # points of the first mask: chair
    sem_logits[sp_ids == 2, 1] = 3.0   # points of the second: table
    run = lambda how: postprocess(class_logits, mask_logits, obj, sem_logits, sp_ids, centres, pts,
                                  ["chair", "table"], PostprocessConfig(min_points=10, instance_class=how))
    assert [i.class_name for i in run("query").instances] == ["chair", "chair"]
    sem = run("semantic").instances
    assert [i.class_name for i in sem] == ["chair", "table"]
    p_table = float(torch.softmax(torch.tensor([0.0, 3.0]), 0)[1])  # every point of mask 2 has this
    expected = p_table * float(torch.sigmoid(obj[1]) * torch.sigmoid(torch.tensor(B)))
    assert abs(sem[1].score - expected) < 1e-5
    q = float(torch.softmax(class_logits[1], 0)[0])
    mean = run("mean").instances  # mask 2: chair 0.5 (q + (1 - p_table)) vs table 0.5 p_table
    assert mean[1].class_name == ("chair" if q + (1 - p_table) > p_table else "table")
    with pytest.raises(ValueError, match="instance_class"):
        PostprocessConfig(instance_class="vote")


def test_instances_never_take_a_stuff_class():
    sp_ids, pts, centres = _two_objects()
    B = 8.0
    mask_logits = torch.tensor([[B, B, -B, -B]])
    class_logits = torch.tensor([[0.0, 0.0, -4.0]])
    obj = torch.full((1,), 4.0)
    sem_logits = torch.zeros(len(sp_ids), 2)
    sem_logits[:, 0] = 3.0  # the points say "wall" (stuff), "table" comes second
    cfg = PostprocessConfig(min_points=10, instance_class="semantic", score_threshold=0.0)
    seg = postprocess(class_logits, mask_logits, obj, sem_logits, sp_ids, centres, pts, ["wall", "table"], cfg)
    assert [i.class_name for i in seg.instances] == ["table"]
    p_table = float(torch.softmax(torch.tensor([3.0, 0.0]), 0)[1])
    assert abs(seg.instances[0].score - p_table * float(torch.sigmoid(obj[0]) * torch.sigmoid(torch.tensor(B)))) < 1e-5
    assert (seg.semantic[sp_ids <= 1] == 0).all()  # per-point semantics still say wall
    seg = postprocess(class_logits, mask_logits, obj, sem_logits, sp_ids, centres, pts, ["wall", "table"],
                      PostprocessConfig(min_points=10, instance_class="semantic", score_threshold=0.0, stuff_classes=()))
    assert [i.class_name for i in seg.instances] == ["wall"]


def test_merge_head_gives_unit_embeddings_per_query_or_none():
    torch.manual_seed(0)
    dec = QueryDecoder(small_cfg(in_dim=16, merge_dim=12, merge_hidden=20))
    lin = [m for m in dec.merge_head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(32, 20), (20, 12)]  # d_model -> hidden -> E
    feats, centres = [torch.randn(7, 16), torch.randn(4, 16)], [torch.rand(7, 3), torch.rand(4, 3)]
    out = dec(*pad_superpoints(feats, centres))
    assert out.merge_embed.shape == (2, 7 + 3, 12)
    torch.testing.assert_close(out.merge_embed.norm(dim=-1), torch.ones(2, 10))
    assert float((out.merge_embed[0] @ out.merge_embed[0].t()).min()) < 0.99  # queries differ
    # padding does not change a real sample's embeddings (as the other heads)
    alone = dec(*pad_superpoints(feats[1:], centres[1:]))
    torch.testing.assert_close(alone.merge_embed[0, :4], out.merge_embed[1, :4], atol=1e-5, rtol=1e-4)
    none = QueryDecoder(small_cfg(in_dim=16, merge_dim=0))
    assert none.merge_head is None and not any("merge" in k for k in none.state_dict())
    assert none(*pad_superpoints(feats, centres)).merge_embed is None
    full = QueryDecoder(DecoderConfig())  # the design's MLP 256 -> 512 -> 256
    assert [tuple(m.weight.shape) for m in full.merge_head if isinstance(m, torch.nn.Linear)] == [(512, 256), (256, 512)]


@pytest.mark.parametrize("bad", [{"merge_dim": -1}, {"merge_hidden": 0}, {"merge_dim": 1.5}, {"merge_dim": "64"},
                                 {"merge_hidden": True}])
def test_merge_head_config_validated(bad):
    with pytest.raises(ValueError, match="merge"):
        small_cfg(**bad)


def test_postprocess_hands_each_instance_its_query_embedding():
    sp_ids, pts, centres = _two_objects()
    B = 8.0
    mask_logits = torch.tensor([[B, B, -B, -B], [B, B, -B, -B], [-B, -B, B, -B], [-B, -B, -B, B]])
    class_logits = torch.full((4, 3), -4.0)
    class_logits[0, 0], class_logits[1, 0], class_logits[2, 1], class_logits[3, 1] = 2.0, 4.0, 4.0, 4.0
    obj = torch.full((4,), 4.0)
    sem_logits = torch.zeros(len(sp_ids), 2)
    emb = torch.nn.functional.normalize(torch.randn(4, 6, generator=torch.Generator().manual_seed(0)), dim=1)
    cfg = PostprocessConfig(min_points=10)
    args = (class_logits, mask_logits, obj, sem_logits, sp_ids, centres, pts, ["chair", "table"], cfg)
    seg = postprocess(*args, merge_embed=emb)
    plain = postprocess(*args)
    # query 1 wins NMS over its duplicate 0, query 2 is the table, query 3 the dropped speck
    assert [i.point_count for i in seg.instances] == [120, 60]
    torch.testing.assert_close(seg.instances[0].embedding, emb[1])
    torch.testing.assert_close(seg.instances[1].embedding, emb[2])
    assert all(i.embedding is None for i in plain.instances)
    assert torch.equal(seg.instance, plain.instance) and torch.equal(seg.semantic, plain.semantic)
    assert [(i.class_id, i.score) for i in seg.instances] == [(i.class_id, i.score) for i in plain.instances]
    with pytest.raises(ValueError, match="merge_embed"):
        postprocess(*args, merge_embed=emb[:3])
