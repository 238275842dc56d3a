"""2D branch: dense CLIP tokens, pixel sampling, Proj2D, text tower, frozen weights, local weight loading.

Everything runs on a registered tiny open_clip ViT (random weights, CPU) except one cheap ViT-B/16 build.
Nothing here may download: the download entry points of open_clip / huggingface_hub are patched to fail.
"""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import open_clip
from bifusion_core.models.clip2d import (
    TINY_MODEL,
    Clip2D,
    Clip2DConfig,
    Proj2D,
    load_state_dict_file,
    resolve_pretrained,
    sample_dense,
)


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", boom)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_hf", boom)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_url", boom)
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", boom)


def tiny(**kw):
    torch.manual_seed(kw.pop("seed", 0))
    kw.setdefault("pretrained", None)
    return Clip2D(Clip2DConfig(model_name=TINY_MODEL, **kw))


def normalised(m, img):
    return (img - m.mean) / m.std


def test_proj2d_is_the_spec_stack_and_unit_norm():
    p = Proj2D()
    ln, g1, l1, g2, l2 = p.net
    assert isinstance(ln, torch.nn.LayerNorm) and ln.normalized_shape == (768,)
    assert isinstance(g1, torch.nn.GELU) and isinstance(g2, torch.nn.GELU)
    assert (l1.in_features, l1.out_features, l2.in_features, l2.out_features) == (768, 512, 512, 256)
    y = p(torch.randn(7, 768))
    assert y.shape == (7, 256) and torch.allclose(y.norm(dim=1), torch.ones(7), atol=1e-5)


def test_dense_tokens_match_open_clip_at_native_and_other_sizes():
    m = tiny()
    vis = m.clip.visual
    img = torch.rand(2, 3, 64, 64)
    tok, hw, scale = m.dense_tokens(img)
    assert tok.shape == (2, 64, 4, 4) and hw == (64, 64) and scale == (1.0, 1.0)
    ref = vis.forward_intermediates(normalised(m, img), indices=1, intermediates_only=True)["image_intermediates"][-1]
    assert torch.allclose(tok, ref, atol=1e-5)
    # non-square grid: open_clip's own model built for 48 x 80 with our interpolated positional embedding
    img = torch.rand(1, 3, 48, 80)
    tok, _, _ = m.dense_tokens(img)
    assert tok.shape == (1, 64, 3, 5)
    other = open_clip.create_model(TINY_MODEL, pretrained=None, force_image_size=(48, 80))
    sd = m.clip.state_dict()
    sd["visual.positional_embedding"] = m._pos_embed(3, 5)
    other.load_state_dict(sd)
    ref = other.visual.forward_intermediates(normalised(m, img), indices=1, intermediates_only=True)
    assert torch.allclose(tok, ref["image_intermediates"][-1], atol=1e-5)
    # the class-token position is kept, the native grid is returned untouched
    assert torch.equal(m._pos_embed(4, 4), vis.positional_embedding)
    assert torch.equal(m._pos_embed(3, 5)[0], vis.positional_embedding[0])
    # padding: 50 x 70 is padded to 64 x 80 (4 x 5 tokens), the padded part equals the mean colour
    tok_pad, hw, _ = m.dense_tokens(torch.rand(1, 3, 50, 70))
    assert tok_pad.shape == (1, 64, 4, 5) and hw == (50, 70)
    x, _, _ = m.preprocess(torch.rand(1, 3, 50, 70))
    assert x.shape == (1, 3, 64, 80) and torch.equal(x[..., 50:, :], torch.zeros(1, 3, 14, 80))
    # one HWC uint8 image is accepted
    hwc = (torch.rand(64, 64, 3) * 255).to(torch.uint8)
    t1, _, _ = m.dense_tokens(hwc)
    t2, _, _ = m.dense_tokens(hwc.permute(2, 0, 1)[None].float() / 255)
    assert torch.allclose(t1, t2, atol=1e-6)


def test_final_ln_and_proj_option_matches_open_clip_tokens():
    m = tiny(use_final_proj=True)
    vis = m.clip.visual
    assert m.token_dim == 32 and m.proj2d.net[0].normalized_shape == (32,)
    img = torch.rand(1, 3, 64, 64)
    tok, _, _ = m.dense_tokens(img)
    vis.output_tokens = True
    try:
        _, ref = vis(normalised(m, img))  # ln_post(x)[:, 1:] for the 'tok' pool
    finally:
        vis.output_tokens = False
    ref = (ref @ vis.proj).transpose(1, 2).reshape(1, 32, 4, 4)
    assert torch.allclose(tok, ref, atol=1e-5)


def bilinear_reference(feat, u, v, patch, sx=1.0, sy=1.0):
    """Independent numpy bilinear lookup with border clamping; token j centred at (j + 0.5) * patch."""
    C, Hp, Wp = feat.shape
    tx = (u + 0.5) * sx / patch - 0.5
    ty = (v + 0.5) * sy / patch - 0.5
    tx, ty = min(max(tx, 0.0), Wp - 1.0), min(max(ty, 0.0), Hp - 1.0)
    x0, y0 = int(math.floor(tx)), int(math.floor(ty))
    x1, y1 = min(x0 + 1, Wp - 1), min(y0 + 1, Hp - 1)
    ax, ay = tx - x0, ty - y0
    return (
        (1 - ax) * (1 - ay) * feat[:, y0, x0]
        + ax * (1 - ay) * feat[:, y0, x1]
        + (1 - ax) * ay * feat[:, y1, x0]
        + ax * ay * feat[:, y1, x1]
    )


def test_sampling_at_pixel_centres():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
    # token (row 1, col 2) of image 1 is centred at pixel (u, v) = (2 * 16 + 7.5, 16 + 7.5)
    uv = torch.tensor([[39.5, 23.5], [7.5, 7.5], [15.5, 7.5], [0.0, 0.0], [63.0, 47.0]])
    batch = torch.tensor([1, 0, 0, 0, 1])
    out = sample_dense(feat, uv, batch, 16)
    assert torch.allclose(out[0], feat[1, :, 1, 2])
    assert torch.allclose(out[1], feat[0, :, 0, 0])
    assert torch.allclose(out[2], (feat[0, :, 0, 0] + feat[0, :, 0, 1]) / 2)  # halfway between two tokens
    assert torch.allclose(out[3], feat[0, :, 0, 0])  # outer half-token clamps to the border
    assert torch.allclose(out[4], feat[1, :, 2, 3])
    # random points, with a resize factor, against the numpy reference
    uvr = torch.rand(50, 2, generator=g, dtype=torch.float64) * torch.tensor([128.0, 96.0]) - 0.5
    br = torch.randint(0, 2, (50,), generator=g)
    out = sample_dense(feat, uvr, br, 16, scale=(0.5, 0.5))
    fn = feat.numpy()
    for i in range(50):
        exp = bilinear_reference(fn[int(br[i])], float(uvr[i, 0]), float(uvr[i, 1]), 16, 0.5, 0.5)
        assert np.allclose(out[i].numpy(), exp, atol=1e-10)


def test_forward_shapes_norms_invalid_zero_and_batching():
    m = tiny()
    imgs = torch.rand(2, 3, 64, 96)
    n = 30
    uv = torch.rand(n, 2) * torch.tensor([95.0, 63.0])
    batch = torch.randint(0, 2, (n,))
    valid = torch.arange(n) % 4 != 0
    f = m(imgs, uv, batch, valid)
    assert f.shape == (n, 256)
    assert torch.allclose(f[valid].norm(dim=1), torch.ones(int(valid.sum())), atol=1e-5)
    assert torch.equal(f[~valid], torch.zeros(int((~valid).sum()), 256))
    # f2D = L2(bilinear sample of Proj2D applied to the token grid), checked against the numpy sampler
    with torch.no_grad():
        tok, _, _ = m.dense_tokens(imgs)
        grid = m.proj2d.net(tok.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).double().numpy()
    for i in range(n):
        if valid[i]:
            exp = bilinear_reference(grid[int(batch[i])], float(uv[i, 0]), float(uv[i, 1]), 16)
            exp = exp / np.linalg.norm(exp)
            assert np.allclose(f[i].detach().numpy(), exp, atol=1e-5)
    # points of image 1 see image 1: same as running image 1 alone
    one = batch == 1
    f1 = m(imgs[1:], uv[one], None, valid[one])
    assert torch.allclose(f[one], f1, atol=1e-5)
    # a different image changes only its own points
    imgs2 = imgs.clone()
    imgs2[1] = torch.rand(3, 64, 96)
    f2 = m(imgs2, uv, batch, valid)
    assert torch.allclose(f2[~one], f[~one], atol=1e-6)
    assert not torch.allclose(f2[one & valid], f[one & valid], atol=1e-3)
    # resize_to: the same pixel lands on the same relative place
    mr = tiny(resize_to=(32, 48))
    tok, hw, scale = mr.dense_tokens(imgs)
    assert tok.shape == (2, 64, 2, 3) and hw == (64, 96) and scale == (0.5, 0.5)
    with pytest.raises(ValueError, match="batch"):
        m(imgs, uv, torch.full((n,), 2), valid)


def test_clip_is_frozen_and_gradients_reach_the_heads():
    m = tiny()
    assert all(not p.requires_grad for p in m.clip.parameters())
    m.train()
    assert m.training and m.proj2d.training and not m.clip.training
    assert not any(mod.training for mod in m.clip.modules())
    img = torch.rand(1, 3, 64, 64)
    f = m(img, torch.rand(10, 2) * 63)
    t = m.encode_text(["chair", "table", "lamp"])
    (f @ t.T).sum().backward()
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in m.proj2d.parameters())
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in m.text_proj.parameters())
    assert all(p.grad is None for p in m.clip.parameters())
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("proj2d.", "text_proj.")) for n in trainable)


def test_text_embeddings_prompt_cache_and_projection():
    m = tiny()
    names = ["chair", "table"]
    t = m.encode_text(names)
    assert t.shape == (2, 256) and torch.allclose(t.norm(dim=1), torch.ones(2), atol=1e-5)
    key = ("a photo of a chair.", "a photo of a table.")
    assert list(m._text_cache) == [key]
    with torch.no_grad():
        tokens = open_clip.get_tokenizer(TINY_MODEL)(list(key))
        ref = F.normalize(m.text_proj(F.normalize(m.clip.encode_text(tokens), dim=-1)), dim=-1)
        assert torch.allclose(t, ref, atol=1e-5)
        # cached: the frozen tower is not run again, the (trainable) projection is
        calls = []
        orig = m.clip.encode_text
        m.clip.encode_text = lambda *a, **k: calls.append(1) or orig(*a, **k)
        m.text_proj.weight.mul_(2.0)
        m.text_proj.bias.zero_()
        t2 = m.encode_text(names)
        assert calls == []
        assert torch.allclose(t2, F.normalize(m.text_proj(m._text_cache[key]), dim=-1), atol=1e-6)
        m.encode_text(["sofa"])
        assert calls == [1]
    with pytest.raises(ValueError, match="name"):
        Clip2DConfig(prompt_template="a photo of a {}.")


def test_local_weights_pt_and_safetensors_load_identically(tmp_path):
    from safetensors.torch import save_file

    src = tiny(seed=123)
    sd = {k: v.detach().clone().contiguous() for k, v in src.clip.state_dict().items()}
    torch.save(sd, tmp_path / "tiny.pt")
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, tmp_path / "wrapped.pth")
    save_file(sd, str(tmp_path / "tiny.safetensors"))
    img = torch.rand(1, 3, 64, 80)
    ref_tok, _, _ = src.dense_tokens(img)
    ref_txt = src.clip_text_embeddings(("a photo of a cup.",))
    for name in ("tiny.pt", "wrapped.pth", "tiny.safetensors"):
        m = tiny(seed=7, weights_path=str(tmp_path / name))
        assert m.weights_source == str(tmp_path / name)
        for k, v in m.clip.state_dict().items():
            assert torch.equal(v, sd[k]), (name, k)
        tok, _, _ = m.dense_tokens(img)
        assert torch.equal(tok, ref_tok)
        assert torch.equal(m.clip_text_embeddings(("a photo of a cup.",)), ref_txt)
        assert all(not p.requires_grad for p in m.clip.parameters())
    # a random model of another seed really differs (the comparison above can fail)
    assert not torch.equal(tiny(seed=7).dense_tokens(img)[0], ref_tok)


def test_pretrained_tag_resolved_from_the_local_cache(tmp_path, monkeypatch):
    # end to end through the tag path: a tag for the tiny model whose HF file sits in a local hub cache
    src = tiny(seed=5)
    monkeypatch.setitem(
        open_clip.pretrained._PRETRAINED,
        TINY_MODEL,
        {
            "bifusion_test": {"hf_hub": "bifusion/tiny-test/", "quick_gelu": False},
            "bifusion_qg": {
                "hf_hub": "bifusion/tiny-test/", "quick_gelu": True, "mean": (0.5,) * 3, "std": (0.25,) * 3
            },
        },
    )
    snap = tmp_path / "models--bifusion--tiny-test" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (tmp_path / "models--bifusion--tiny-test" / "refs").mkdir()
    (tmp_path / "models--bifusion--tiny-test" / "refs" / "main").write_text("abc123")
    torch.save(src.clip.state_dict(), snap / "open_clip_pytorch_model.bin")
    m = tiny(seed=9, pretrained="bifusion_test", cache_dir=str(tmp_path))
    assert m.weights_source == str(snap / "open_clip_pytorch_model.bin")
    img = torch.rand(1, 3, 64, 64)
    assert torch.equal(m.dense_tokens(img)[0], src.dense_tokens(img)[0])
    assert isinstance(m.clip.visual.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
    # a tag trained with QuickGELU (like 'openai') selects it, and its normalisation constants
    qg = tiny(pretrained="bifusion_qg", cache_dir=str(tmp_path))
    assert type(qg.clip.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert torch.equal(qg.mean.flatten(), torch.full((3,), 0.5))
    assert torch.equal(qg.std.flatten(), torch.full((3,), 0.25))
    assert not torch.equal(qg.dense_tokens(img)[0], src.dense_tokens(img)[0])
    # the HF_HUB_CACHE environment variable is honoured like huggingface_hub does
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert resolve_pretrained(TINY_MODEL, "bifusion_test") == snap / "open_clip_pytorch_model.bin"


def test_vit_b16_openai_cache_layout(tmp_path):
    repo = tmp_path / "models--timm--vit_base_patch16_clip_224.openai"
    (repo / "snapshots" / "old").mkdir(parents=True)
    (repo / "snapshots" / "new").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("new\n")
    # nothing cached yet -> clear error listing every path tried (hub files and open_clip's URL cache)
    with pytest.raises(FileNotFoundError) as exc:
        resolve_pretrained("ViT-B-16", "openai", cache_dir=tmp_path)
    msg = str(exc.value)
    assert "open_clip_model.safetensors" in msg and "open_clip_pytorch_model.bin" in msg
    assert str(tmp_path / "ViT-B-16.pt") in msg and "weights_path" in msg and "never downloads" in msg
    (tmp_path / "ViT-B-16.pt").write_bytes(b"x")
    assert resolve_pretrained("ViT-B-16", "openai", cache_dir=tmp_path) == tmp_path / "ViT-B-16.pt"
    (repo / "snapshots" / "old" / "open_clip_pytorch_model.bin").write_bytes(b"x")
    found = resolve_pretrained("ViT-B-16", "openai", cache_dir=tmp_path)
    assert found == repo / "snapshots" / "old" / "open_clip_pytorch_model.bin"
    (repo / "snapshots" / "old" / "open_clip_model.safetensors").write_bytes(b"x")
    (repo / "snapshots" / "new" / "open_clip_model.safetensors").write_bytes(b"x")
    found = resolve_pretrained("ViT-B-16", "openai", cache_dir=tmp_path)
    assert found == repo / "snapshots" / "new" / "open_clip_model.safetensors"
    with pytest.raises(ValueError, match="unknown pretrained tag"):
        resolve_pretrained("ViT-B-16", "no_such_tag", cache_dir=tmp_path)


def test_missing_or_bad_weights_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt") as exc:
        tiny(weights_path=str(tmp_path / "nope.pt"))
    assert "weights_path" in str(exc.value)
    # default config (ViT-B-16 'openai') with an empty cache: fails before building anything
    with pytest.raises(FileNotFoundError, match="no cached weights for open_clip model 'ViT-B-16'"):
        Clip2D(Clip2DConfig(cache_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="weights_path must end"):
        Clip2DConfig(weights_path="weights.txt")
    # weights of another architecture
    torch.save({"visual.conv1.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="do not match"):
        tiny(weights_path=str(tmp_path / "other.pt"))
    # not a weights-only file (a pickled object)
    torch.save({"cfg": Clip2DConfig(model_name=TINY_MODEL)}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="weights-only"):
        load_state_dict_file(tmp_path / "pickled.pt")
    # a TorchScript archive (the format of OpenAI's original ViT-B-16.pt) is refused, not executed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "scripted.pt"))
    with pytest.raises(ValueError, match="TorchScript"):
        load_state_dict_file(tmp_path / "scripted.pt")


def test_vit_b16_builds_without_download_and_gives_30x40_tokens():
    torch.manual_seed(0)
    m = Clip2D(Clip2DConfig(pretrained=None))  # ViT-B/16, random init
    assert m.patch == 16 and m.width == 768 and m.token_dim == 768 and m.embed_dim == 512
    assert m.proj2d.net[0].normalized_shape == (768,) and m.text_proj.in_features == 512
    with torch.no_grad():
        tokens = m.dense_tokens(torch.rand(1, 3, 480, 640))
        assert tokens[0].shape == (1, 768, 30, 40)
        f = m(None, torch.tensor([[0.0, 0.0], [639.0, 479.0], [320.0, 240.0]]), tokens=tokens)
    assert f.shape == (3, 256) and torch.allclose(f.norm(dim=1), torch.ones(3), atol=1e-5)
    # a random init (no tag) keeps the config's GELU
    assert isinstance(m.clip.visual.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)


def test_inference_sampling_matches_grid_sample_and_training_keeps_gradients():
    """Without autograd sample_dense applies the bilinear weights as one sparse product; with it, grid_sample
    (differentiable). Both give the same values, NaN pixels included (grid_sample's nan_to_num -> the centre)."""
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(2, 7, 5, 6, generator=g, dtype=torch.float64)
    uv = torch.rand(300, 2, generator=g, dtype=torch.float64) * torch.tensor([100.0, 80.0]) - 2.0
    uv[5] = float("nan")
    batch = torch.randint(0, 2, (300,), generator=g)
    with torch.no_grad():
        fast = sample_dense(feat, uv, batch, 16, scale=(0.9, 0.9))
    leaf = feat.clone().requires_grad_(True)
    slow = sample_dense(leaf, uv, batch, 16, scale=(0.9, 0.9))
    assert slow.requires_grad and not fast.requires_grad
    torch.testing.assert_close(fast, slow.detach(), rtol=0, atol=1e-12)
    slow.sum().backward()
    assert leaf.grad is not None and float(leaf.grad.abs().sum()) > 0
    half = sample_dense(feat.float(), uv.float(), batch, 16, scale=(0.9, 0.9))
    torch.testing.assert_close(half.double(), slow.detach(), rtol=1e-5, atol=1e-5)


def test_building_a_tower_logs_our_own_line_not_open_clips_random_init_warning(caplog):
    """open_clip warns that a model built without weights "initialized randomly" even when its weights are
    loaded right after (as Clip2D always builds it); only Clip2D's own line says what happened."""
    import logging

    with caplog.at_level(logging.DEBUG):
        tiny(pretrained=None)
    assert "random CLIP init" in caplog.text  # ours: no weights at all
    assert "No pretrained weights loaded" not in caplog.text
    logging.warning("No pretrained weights loaded for model 'x'. Model initialized randomly.")
    assert "No pretrained weights loaded" in caplog.text  # the filter is gone again afterwards
