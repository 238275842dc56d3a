"""Voxelisation round trip, batching, bad input, and the Backbone3D head."""
import pytest
import torch

from bifusion_core.models.minkunet import Backbone3D, Backbone3DConfig, MinkUNet18A, MinkUNetConfig
from bifusion_core.sparse import devoxelize, get_backend, voxelize


def test_voxelize_mean_pools_and_devoxelize_round_trips():
    pts = torch.tensor([[0.01, 0.01, 0.01], [0.04, 0.02, 0.03], [0.06, 0.0, 0.0], [-0.01, 0.0, 0.0]])
    feats = torch.tensor([[1.0], [3.0], [5.0], [7.0]])
    v = voxelize(pts, feats, 0.05)
    assert v.coords.shape == (3, 4)
    # voxel of the first two points holds their mean, the others their own value
    assert torch.allclose(v.feats[v.inverse[0]], torch.tensor([2.0]))
    assert torch.allclose(devoxelize(v.feats, v.inverse).squeeze(1), torch.tensor([2.0, 2.0, 5.0, 7.0]))
    assert v.coords[v.inverse[3]].tolist() == [0, -1, 0, 0]  # floor, not truncation
    assert v.counts.sum() == 4
    # a cloud with one point per voxel round-trips exactly
    grid = torch.stack(torch.meshgrid(*[torch.arange(4.0)] * 3, indexing="ij"), -1).view(-1, 3) * 0.05 + 0.025
    f = torch.randn(grid.shape[0], 5)
    v = voxelize(grid, f, 0.05)
    assert torch.equal(devoxelize(v.feats, v.inverse), f)


@pytest.mark.parametrize(
    "points,feats,match",
    [
        (torch.zeros(0, 3), torch.zeros(0, 3), "empty"),
        (torch.tensor([[0.0, float("nan"), 0.0]]), torch.zeros(1, 3), "NaN or infinite"),
        (torch.tensor([[0.0, float("inf"), 0.0]]), torch.zeros(1, 3), "NaN or infinite"),
        (torch.tensor([[5000.0, 0.0, 0.0]]), torch.zeros(1, 3), "supported range"),
        (torch.zeros(4, 3), torch.zeros(3, 3), "does not match point count"),
        (torch.zeros(4, 2), torch.zeros(4, 3), r"\(N, 3\)"),
    ],
)
def test_voxelize_bad_input(points, feats, match):
    with pytest.raises(ValueError, match=match):
        voxelize(points, feats, 0.05)


def test_sparse_tensor_bad_coordinates():
    backend = get_backend("torch")
    with pytest.raises(ValueError, match="empty"):
        backend.from_voxels(torch.zeros(0, 4, dtype=torch.int32), torch.zeros(0, 3))
    with pytest.raises(ValueError, match="supported range"):
        backend.from_voxels(torch.tensor([[0, 40000, 0, 0]], dtype=torch.int32), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="does not match coordinate count"):
        backend.from_voxels(torch.zeros(2, 4, dtype=torch.int32), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="unknown sparse backend"):
        get_backend("spconv")


def _scene(seed, n=3000):
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(n, 3, generator=g) * torch.tensor([2.0, 1.5, 1.0]) - 0.5
    return pts, torch.rand(n, 3, generator=g)


def test_batch_of_two_equals_each_alone():
    torch.manual_seed(0)
    model = Backbone3D(Backbone3DConfig(unet=MinkUNetConfig(width=0.25))).eval()
    (p1, c1), (p2, c2) = _scene(1), _scene(2, 2500)
    with torch.no_grad():
        f1, _ = model(p1, c1)
        f2, _ = model(p2, c2)
        batch = torch.cat([torch.zeros(len(p1), dtype=torch.long), torch.ones(len(p2), dtype=torch.long)])
        fb, vox = model(torch.cat([p1, p2]), torch.cat([c1, c2]), batch)
    torch.testing.assert_close(fb[: len(p1)], f1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fb[len(p1):], f2, atol=1e-5, rtol=1e-5)
    assert set(vox.coords[:, 0].tolist()) == {0, 1}


def test_backbone_output_is_unit_norm_and_shared_per_voxel():
    model = Backbone3D(Backbone3DConfig(unet=MinkUNetConfig(width=0.25)))
    p, c = _scene(3)
    p = torch.cat([p, p + 0.001])  # duplicates inside the same voxel
    f, vox = model(p, torch.cat([c, c]))
    assert f.shape == (len(p), 256)
    torch.testing.assert_close(f.norm(dim=1), torch.ones(len(p)))
    same = vox.inverse[: len(p) // 2] == vox.inverse[len(p) // 2:]
    assert same.any()
    torch.testing.assert_close(f[: len(p) // 2][same], f[len(p) // 2:][same])
    f.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_backbone_rejects_mismatched_features():
    model = Backbone3D(Backbone3DConfig(unet=MinkUNetConfig(width=0.25)))
    with pytest.raises(ValueError, match="does not match point count"):
        model(torch.zeros(5, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="input feature channels"):
        model(torch.zeros(5, 3), torch.zeros(5, 4))


def test_config_validation():
    with pytest.raises(ValueError):
        MinkUNetConfig(width=0)
    with pytest.raises(ValueError):
        MinkUNetConfig(planes=(1, 2, 3))
    with pytest.raises(ValueError):
        Backbone3DConfig(voxel_size=-1)
    with pytest.raises(ValueError):
        Backbone3DConfig(backend="spconv")
    assert Backbone3DConfig(unet={"width": 0.5}).unet.width == 0.5


def test_full_plan_channels():
    net = MinkUNet18A(MinkUNetConfig())
    assert net.conv0p1s1.kernel.shape == (125, 3, 32)
    assert [net.block1[0].conv1.out_channels, net.block2[0].conv1.out_channels, net.block3[0].conv1.out_channels,
            net.block4[0].conv1.out_channels] == [32, 64, 128, 256]
    assert net.convtr4p16s2.kernel.shape == (8, 256, 128)
    assert net.block5[0].conv1.in_channels == 128 + 128
    assert net.block6[0].conv1.in_channels == 128 + 64
    assert net.block7[0].conv1.in_channels == 96 + 32
    assert net.block8[0].conv1.in_channels == 96 + 32
    assert net.final.kernel.shape == (96, 96) and net.final.bias is not None
