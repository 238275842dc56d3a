"""Back-projection, projection and the 2D valid mask (bifusion_core.geometry)."""
import math

import numpy as np
import pytest
import torch

from bifusion_core.geometry import (
    CameraIntrinsics,
    backproject,
    check_pose,
    compute_valid_mask,
    depth_to_metres,
    project_points,
    transform_points,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def rot(axis, angle):
    """Rodrigues rotation matrix (float64 numpy), independent of the module under test."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def pose(R, t):
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


K = CameraIntrinsics(fx=10.0, fy=12.0, cx=3.2, cy=2.1)


@pytest.mark.parametrize("device", DEVICES)
def test_backproject_then_project_returns_the_same_pixels(device):
    g = torch.Generator().manual_seed(0)
    H, W = 5, 7
    depth = (torch.rand(H, W, generator=g) * 3 + 0.5)
    depth[1, 2] = 0.0  # hole
    depth[3, 4] = float("nan")  # hole
    T = pose(rot([0.3, -1.0, 0.4], 0.7), [1.0, -2.0, 0.5])
    bp = backproject(depth.to(device), K, pose=torch.tensor(T).to(device))
    assert len(bp) == H * W - 2
    assert bp.points.device.type == device
    uv, z = project_points(bp.points, K, torch.tensor(T))
    assert torch.allclose(uv.cpu(), bp.pixels.cpu().float(), atol=1e-4)
    assert torch.allclose(z.cpu(), bp.depth.cpu(), atol=1e-5)
    proj = compute_valid_mask(bp.points, depth.to(device), K, T)
    assert bool(proj.valid.all())
    assert torch.equal(proj.pixels.cpu(), bp.pixels.cpu())
    # independent back-projection of one pixel (u=5, v=3) through the pose
    d = float(depth[3, 5])
    pc = np.array([(5 - K.cx) * d / K.fx, (3 - K.cy) * d / K.fy, d])
    idx = int(((bp.pixels.cpu()[:, 0] == 5) & (bp.pixels.cpu()[:, 1] == 3)).nonzero())
    assert np.allclose(bp.points_cam[idx].cpu().numpy(), pc, atol=1e-5)
    assert np.allclose(bp.points[idx].cpu().numpy(), T[:3, :3] @ pc + T[:3, 3], atol=1e-5)


def test_uint16_millimetres_equal_float_metres_and_numpy_is_accepted():
    mm = np.array([[1000, 0, 2500], [1234, 65535, 0]], dtype=np.uint16)
    m = mm.astype(np.float32) / 1000.0
    a = backproject(mm, (K.fx, K.fy, K.cx, K.cy))
    b = backproject(torch.from_numpy(m), K.as_matrix())
    assert len(a) == len(b) == 4
    assert torch.allclose(a.points, b.points, atol=1e-6)
    assert torch.allclose(a.depth, torch.tensor([1.0, 2.5, 1.234, 65.535]), atol=1e-6)
    # an explicit scale overrides the dtype default (e.g. a 0.1 mm depth unit)
    c = backproject(mm, K, depth_scale=0.0001)
    assert torch.allclose(c.depth, a.depth / 10, atol=1e-6)


def test_colour_stride_range_and_subsampling():
    H, W = 6, 8
    depth = torch.full((H, W), 2.0)
    depth[0, 0] = 0.5
    depth[2, 4] = 9.0
    rgb = torch.arange(H * W * 3, dtype=torch.int64).remainder(256).to(torch.uint8).view(H, W, 3)
    bp = backproject(depth, K, rgb)
    assert torch.allclose(bp.colors, rgb[bp.pixels[:, 1], bp.pixels[:, 0]].float() / 255)
    assert bp.colors.dtype == torch.float32
    s = backproject(depth, K, rgb, stride=2)
    assert len(s) == 3 * 4
    assert set(map(tuple, s.pixels.tolist())) == {(u, v) for v in range(0, H, 2) for u in range(0, W, 2)}
    r = backproject(depth, K, min_depth=1.0, max_depth=5.0)
    assert len(r) == H * W - 2
    assert (0, 0) not in set(map(tuple, r.pixels.tolist())) and (4, 2) not in set(map(tuple, r.pixels.tolist()))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = backproject(depth, K, max_points=10, generator=g1)
    b = backproject(depth, K, max_points=10, generator=g2)
    assert len(a) == 10 and torch.equal(a.pixels, b.pixels)
    assert len(set(map(tuple, a.pixels.tolist()))) == 10


def scene_depth():
    """5 x 5 image of a wall 2 m in front of the camera, with one hole at pixel (u=0, v=0)."""
    d = torch.full((5, 5), 2.0)
    d[0, 0] = 0.0
    return d


SCENE_K = CameraIntrinsics(10.0, 10.0, 2.0, 2.0)
# (camera-frame point, inside, valid, why)
SCENE = [
    ((0.0, 0.0, 2.0), True, True, "on the wall, centre pixel"),
    ((0.0, 0.0, 2.04), True, True, "4 cm off: within eps"),
    ((0.0, 0.0, 2.06), True, False, "6 cm off: beyond eps"),
    ((0.0, 0.0, 3.0), True, False, "behind the wall: occluded"),
    ((0.0, 0.0, 1.0), True, False, "in front of the wall: not what the depth saw"),
    ((10.0, 0.0, 2.0), False, False, "out of frame (u = 52)"),
    ((0.0, 0.0, -2.0), False, False, "behind the camera"),
    ((-0.4, -0.4, 2.0), True, False, "projects onto the depth hole"),
    ((0.498, 0.0, 2.0), True, True, "u = 4.49 -> pixel 4, inside"),
    ((0.5, 0.0, 2.0), False, False, "u = 4.5 -> pixel 5, outside"),
    ((-0.5, 0.0, 2.0), True, True, "u = -0.5 -> pixel 0, inside"),
    ((-0.502, 0.0, 2.0), False, False, "u = -0.51 -> pixel -1, outside"),
]


@pytest.mark.parametrize("device", DEVICES)
def test_hand_built_scene_valid_mask(device):
    pts = torch.tensor([p for p, *_ in SCENE], dtype=torch.float32)
    proj = compute_valid_mask(pts.to(device), scene_depth().to(device), SCENE_K)
    assert proj.inside.cpu().tolist() == [s[1] for s in SCENE], [s[3] for s in SCENE]
    assert proj.valid.cpu().tolist() == [s[2] for s in SCENE], [s[3] for s in SCENE]
    assert proj.pixels[0].tolist() == [2, 2]
    assert torch.isnan(proj.uv[6]).all()  # behind the camera
    # same scene, camera somewhere else in the world: points moved by the pose give the same mask
    T = pose(rot([1.0, 2.0, -0.5], 1.1), [3.0, -1.0, 0.7])
    pw = transform_points(pts.double(), T)
    proj_w = compute_valid_mask(pw, scene_depth(), SCENE_K, torch.tensor(T))
    assert proj_w.valid.tolist() == [s[2] for s in SCENE]
    # a tighter eps rejects the 4 cm point; millimetre depth gives the same answer
    tight = compute_valid_mask(pts, (scene_depth() * 1000).to(torch.int32), SCENE_K, eps=0.03)
    assert tight.valid.tolist() == [s[2] and i != 1 for i, s in enumerate(SCENE)]


def test_empty_depth_gives_empty_result():
    for depth in (torch.zeros(4, 5), torch.full((4, 5), float("nan")), np.zeros((4, 5), np.uint16)):
        bp = backproject(depth, K, rgb=torch.zeros(4, 5, 3, dtype=torch.uint8), pose=np.eye(4))
        assert len(bp) == 0
        assert bp.points.shape == (0, 3) and bp.pixels.shape == (0, 2) and bp.colors.shape == (0, 3)
    # nothing inside the range is empty too
    assert len(backproject(torch.full((4, 5), 9.0), K, max_depth=5.0)) == 0
    # NaN / inf / negative readings are holes, the rest survives
    d = torch.tensor([[1.0, float("nan"), float("inf")], [-1.0, 2.0, 0.0]])
    assert depth_to_metres(d).tolist() == [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
    assert len(backproject(d, K)) == 2


def test_bad_input_raises_clear_errors():
    depth = torch.ones(4, 5)
    with pytest.raises(ValueError, match="RGB and depth sizes differ"):
        backproject(depth, K, rgb=torch.zeros(4, 6, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        backproject(depth, K, rgb=torch.zeros(4, 5, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8 or float"):
        backproject(depth, K, rgb=torch.zeros(4, 5, 3, dtype=torch.int64))
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        backproject(depth, K, pose=bad)
    with pytest.raises(ValueError, match="non-finite"):
        compute_valid_mask(torch.zeros(2, 3), depth, K, pose=torch.tensor(bad))
    with pytest.raises(ValueError, match="proper rotation"):
        check_pose(np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="4x4"):
        backproject(depth, K, pose=np.eye(3))
    with pytest.raises(ValueError, match="finite"):
        CameraIntrinsics(float("nan"), 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="finite"):
        backproject(depth, (10.0, 10.0, float("inf"), 1.0))
    with pytest.raises(ValueError, match="positive"):
        CameraIntrinsics(0.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        backproject(torch.ones(1, 4, 5), K)
    with pytest.raises(ValueError, match="uint16"):
        backproject(torch.ones(4, 5, dtype=torch.bool), K)
    with pytest.raises(ValueError, match="uint16"):
        backproject(np.ones((4, 5), np.uint8), K)
    with pytest.raises(ValueError, match="stride"):
        backproject(depth, K, stride=0)
    with pytest.raises(ValueError, match="min_depth"):
        backproject(depth, K, min_depth=3.0, max_depth=1.0)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        project_points(torch.zeros(3, 2), K)
    with pytest.raises(ValueError, match="eps"):
        compute_valid_mask(torch.zeros(2, 3), depth, K, eps=0.0)
    with pytest.raises(ValueError, match="torch.Tensor or numpy"):
        backproject([[1.0]], K)


def test_scaled_intrinsics_keep_pixel_centres_consistent():
    # a point seen at pixel u in a W-wide image sits at (u + 0.5) * s - 0.5 in the image resized by s
    p = torch.tensor([[0.3, -0.2, 2.0]])
    uv, _ = project_points(p, K)
    uv2, _ = project_points(p, K.scaled(0.5, 0.25))
    expected = torch.tensor([(uv[0, 0] + 0.5) * 0.5 - 0.5, (uv[0, 1] + 0.5) * 0.25 - 0.5])
    assert torch.allclose(uv2[0], expected, atol=1e-5)


def test_quaternions_and_rigid_transforms_against_scipy():
    """``quaternion_to_matrix`` / ``matrix_to_quaternion`` / ``rigid_matrix`` / ``invert_rigid`` against
    scipy's Rotation (also ``x, y, z, w``) on random rotations, including ones near 180 degrees."""
    from scipy.spatial.transform import Rotation

    from bifusion_core.geometry import invert_rigid, matrix_to_quaternion, quaternion_to_matrix, rigid_matrix

    rng = np.random.default_rng(3)
    rots = list(Rotation.random(50, random_state=7)) + [Rotation.from_rotvec([np.pi - 1e-6, 0, 0]),
                                                         Rotation.from_rotvec([0, 0, np.pi])]
    for r in rots:
        q = r.as_quat()
        np.testing.assert_allclose(quaternion_to_matrix(q * 3.0), r.as_matrix(), atol=1e-12)  # normalised first
        back = matrix_to_quaternion(r.as_matrix())
        assert back[3] >= 0 and np.isclose(abs(np.dot(back, q)), 1.0, atol=1e-9)  # the same rotation
        t = rng.normal(size=3)
        T = rigid_matrix(t, q)
        p = rng.normal(size=(5, 3))
        np.testing.assert_allclose(p @ T[:3, :3].T + T[:3, 3], r.apply(p) + t, atol=1e-12)
        np.testing.assert_allclose(invert_rigid(T) @ T, np.eye(4), atol=1e-12)
    for bad, msg in (([0, 0, 0, 0], "zero length"), ([0, np.nan, 0, 1], "not finite"), ([1, 0, 0], "4 values")):
        with pytest.raises(ValueError, match=msg):
            quaternion_to_matrix(bad)


def test_camera_intrinsics_carry_an_optional_size_and_distortion():
    from bifusion_core.geometry import CameraIntrinsics

    k = CameraIntrinsics(615.0, 616.0, 319.5, 239.5, 640, 480, "plumb_bob", [0.1, 0, 0, 0, 0])
    assert k.as_tuple() == (615.0, 616.0, 319.5, 239.5) and k.has_distortion and k.d == (0.1, 0.0, 0.0, 0.0, 0.0)
    np.testing.assert_array_equal(k.K, [[615.0, 0, 319.5], [0, 616.0, 239.5], [0, 0, 1]])
    half = k.scaled(0.5)
    assert (half.width, half.height) == (320, 240) and half.cx == pytest.approx(159.5)  # pixel centres kept
    assert half.d == k.d and half.distortion_model == "plumb_bob"
    assert CameraIntrinsics(1, 1, 0, 0).scaled(2).width is None and not CameraIntrinsics(1, 1, 0, 0).has_distortion
    for bad in ({"width": 0}, {"height": -3}, {"width": 2.5}, {"width": True}):
        with pytest.raises(ValueError, match="must be a positive integer"):
            CameraIntrinsics(1, 1, 0, 0, **bad)
