"""Superpoints: coverage, separation, compactness, determinism, 2D-mask splitting, pooling."""
import torch

from bifusion_core.models.superpoints import (SuperpointConfig, compute_superpoints, pool_mean,
                                              smallest_eigenvector)


def box_surface(lo, hi, step=0.02):
    lo, hi = torch.tensor(lo), torch.tensor(hi)
    pts = []
    for axis in range(3):
        a, b = [i for i in range(3) if i != axis]
        ua = torch.arange(float(lo[a]), float(hi[a]) + 1e-6, step)
        ub = torch.arange(float(lo[b]), float(hi[b]) + 1e-6, step)
        ga, gb = torch.meshgrid(ua, ub, indexing="ij")
        for side in (lo[axis], hi[axis]):
            p = torch.empty(ga.numel(), 3)
            p[:, axis], p[:, a], p[:, b] = side, ga.flatten(), gb.flatten()
            pts.append(p)
    return torch.cat(pts)


def test_every_point_once_and_deterministic():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(20000, 3, generator=g) * torch.tensor([3.0, 2.0, 0.02])
    cols = torch.rand(20000, 3, generator=g)
    a = compute_superpoints(pts, cols)
    b = compute_superpoints(pts.clone(), cols.clone())
    assert a.ids.shape == (20000,) and int(a.ids.min()) == 0 and int(a.ids.max()) == a.count - 1
    assert torch.equal(torch.unique(a.ids), torch.arange(a.count))  # contiguous, none empty
    assert int(a.sizes.sum()) == 20000
    assert torch.equal(a.ids, b.ids)


def test_boxes_a_voxel_apart_never_share():
    # voxel 0.05: box A occupies voxels x <= 19, box B x >= 21; voxel 20 is empty
    a = box_surface((0.0, 0.0, 0.0), (0.99, 0.6, 0.6))
    b = box_surface((1.06, 0.0, 0.0), (1.8, 0.6, 0.6))  # 1.05 would round into voxel 20 in float32
    pts = torch.cat([a, b])
    cols = torch.full_like(pts, 0.5)  # same colour: only geometry can separate them
    sp = compute_superpoints(pts, cols, SuperpointConfig(seed_size=0.4))
    sa, sb = set(sp.ids[: len(a)].tolist()), set(sp.ids[len(a):].tolist())
    assert sa and sb and not (sa & sb)


def test_flat_wall_splits_into_compact_superpoints():
    y, z = torch.meshgrid(torch.arange(0, 4.0, 0.02), torch.arange(0, 2.5, 0.02), indexing="ij")
    wall = torch.stack([torch.zeros_like(y), y, z], -1).view(-1, 3)
    cfg = SuperpointConfig(seed_size=0.5)
    sp = compute_superpoints(wall, torch.full_like(wall, 0.7), cfg)
    cells = (4 / 0.5) * (2.5 / 0.5)
    assert 0.5 * cells <= sp.count <= 2 * cells
    # compact: no superpoint is much larger than a few seed cells
    assert float(sp.extents.max()) <= 3 * cfg.seed_size
    assert float(sp.extents[:, 1:].max(1).values.median()) <= 1.5 * cfg.seed_size


def test_colour_edge_is_respected():
    y, z = torch.meshgrid(torch.arange(0, 2.0, 0.02), torch.arange(0, 1.0, 0.02), indexing="ij")
    wall = torch.stack([torch.zeros_like(y), y, z], -1).view(-1, 3)
    cols = torch.where((wall[:, 1] < 0.99).unsqueeze(1), torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.1, 0.9]))
    sp = compute_superpoints(wall, cols, SuperpointConfig(seed_size=0.5, colour_weight=4.0))
    left, right = wall[:, 1] < 0.95, wall[:, 1] > 1.05
    assert not (set(sp.ids[left].tolist()) & set(sp.ids[right].tolist()))


def test_masks_split_superpoints():
    y, z = torch.meshgrid(torch.arange(0, 2.0, 0.02), torch.arange(0, 1.0, 0.02), indexing="ij")
    wall = torch.stack([torch.zeros_like(y), y, z], -1).view(-1, 3)
    masks = torch.where(wall[:, 2] < 0.31, 1, -1)
    masks[(wall[:, 1] > 1.4) & (wall[:, 2] > 0.6)] = 7
    sp = compute_superpoints(wall, torch.full_like(wall, 0.5), SuperpointConfig(seed_size=1.0), masks=masks)
    for s in range(sp.count):
        assert len(set(masks[sp.ids == s].tolist())) == 1


def test_stats_and_pooling():
    pts = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [5.0, 5, 5]])
    ids = torch.tensor([0, 0, 1])
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 10.0]])
    torch.testing.assert_close(pool_mean(f, ids, 2), torch.tensor([[2.0, 3.0], [10.0, 10.0]]))
    from bifusion_core.models.superpoints import superpoint_stats

    centres, extents, sizes = superpoint_stats(pts, ids, 2)
    torch.testing.assert_close(centres[0], torch.tensor([0.5, 0.0, 0.0]))
    torch.testing.assert_close(extents[0], torch.tensor([1.0, 0.0, 0.0]))
    assert sizes.tolist() == [2, 1]


def test_closed_form_normals_match_eigh():
    x = torch.randn(500, 3, 3, generator=torch.Generator().manual_seed(1))
    a = x @ x.transpose(1, 2)
    v = smallest_eigenvector(a).double()
    _, vecs = torch.linalg.eigh(a.double())
    assert (v * vecs[:, :, 0]).sum(1).abs().min() > 0.999
    flat = torch.diag(torch.tensor([1.0, 1.0, 0.0])).expand(3, 3, 3)
    torch.testing.assert_close(smallest_eigenvector(flat).abs(), torch.tensor([[0.0, 0.0, 1.0]] * 3))


def test_voxel_graph_adjacency_and_normals_match_a_brute_force_reference():
    """The adjacency table (from the kernel map's neighbour table) is each voxel's occupied 26-neighbourhood, cut
    between voxels of different masks; each normal is the PCA normal of the points of the voxel and its
    neighbours, computed here in float64 with numpy."""
    import numpy as np

    from bifusion_core.models.superpoints import _VoxelGraph
    from bifusion_core.sparse.voxelize import voxelize

    g = torch.Generator().manual_seed(3)
    pts = torch.cat([box_surface((0, 0, 0), (0.6, 0.4, 0.3)), torch.rand(300, 3, generator=g) * 0.8])
    cols = torch.rand(pts.shape[0], 3, generator=g)
    masks = (pts[:, 0] > 0.3).long() - (pts[:, 2] > 0.25).long()  # -1, 0, 1
    cfg = SuperpointConfig()
    for m in (None, masks):
        graph = _VoxelGraph(pts, cols, m, cfg)
        vox = voxelize(pts, cols, cfg.voxel_size)
        cells = {tuple(c): i for i, c in enumerate(vox.coords[:, 1:].tolist())}
        vmask = None
        if m is not None:
            vmask = torch.full((graph.count,), 1 << 40).scatter_reduce(0, vox.inverse, m, "amin").tolist()
        assert graph.count == len(cells)
        for c, i in cells.items():
            want = set()
            for d in [(a, b, e) for a in (-1, 0, 1) for b in (-1, 0, 1) for e in (-1, 0, 1) if (a, b, e) != (0, 0, 0)]:
                j = cells.get((c[0] + d[0], c[1] + d[1], c[2] + d[2]))
                if j is not None and (vmask is None or vmask[i] == vmask[j] or vmask[i] < 0 and vmask[j] < 0):
                    want.add(j)
            got = [j for j in graph.adj[i].tolist() if j >= 0]
            assert sorted(got) == sorted(want), (c, got, want)
        if m is None:  # normals: PCA of all points in the 27-neighbourhood
            p = pts.double().numpy()
            vid = vox.inverse.numpy()
            coords = vox.coords[:, 1:].numpy()
            checked = 0
            for i in range(0, graph.count, 7):
                near = np.abs(coords[vid] - coords[i]).max(1) <= 1
                q = p[near] - p[near].mean(0)
                evals, evecs = np.linalg.eigh(q.T @ q)
                if evals[1] > 10 * abs(evals[0]) + 1e-3 * evals[2]:  # a well-defined normal (not a line)
                    checked += 1
                    assert abs(float(np.dot(evecs[:, 0], graph.normal[i].double().numpy()))) > 0.99
            assert checked > 30


def test_order_keys_sort_as_value_then_tiebreak_pairs():
    """The growth step's single ``amin`` relies on int64 keys ordered exactly as (float32 value, tiebreak)."""
    from bifusion_core.models.superpoints import _order_key

    g = torch.Generator().manual_seed(0)
    vals = torch.cat([torch.randn(2000, generator=g), torch.tensor([0.0, 1e-30, -1e-30, 3.4e38, -3.4e38, 1.0, 1.0])])
    tb = torch.randint(0, 2**31 - 1, (vals.shape[0],), generator=g)
    tb[-2:] = torch.tensor([7, 3])  # equal values: the smaller tiebreak first
    keys = _order_key(vals, tb)
    want = sorted(range(len(vals)), key=lambda i: (float(vals[i]), int(tb[i])))
    assert torch.argsort(keys).tolist() == want
    assert torch.equal(keys & 0xFFFFFFFF, tb)
