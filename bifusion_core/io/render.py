"""PNG/PLY outputs of a processed frame: label overlay, α heat map, labelled cloud, instance JSON."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from .palette import PALETTE_RGB8
from .ply import write_ply


def label_colours(labels: np.ndarray, seed: int = 7) -> np.ndarray:
    """``(N,)`` int labels -> ``(N, 3)`` uint8 colours, deterministic per label; negative labels grey."""
    labels = np.asarray(labels, np.int64)
    rng = np.random.default_rng(seed)
    n = int(labels.max()) + 2 if labels.size else 1
    pal = rng.integers(40, 256, (max(n, 1), 3)).astype(np.uint8)
    out = np.full((labels.size, 3), 90, np.uint8)
    ok = labels >= 0
    out[ok] = pal[labels[ok]]
    return out


def splat(pixels: np.ndarray, values: np.ndarray, shape: tuple[int, int], stride: int, fill=0) -> np.ndarray:
    """Write per-point ``values`` (N, ...) into an image of ``shape`` at ``pixels`` (N, 2) (u, v), filling each
    point's ``stride x stride`` block."""
    h, w = shape
    img = np.full((h, w) + values.shape[1:], fill, values.dtype)
    for dv in range(stride):
        for du in range(stride):
            img[np.minimum(pixels[:, 1] + dv, h - 1), np.minimum(pixels[:, 0] + du, w - 1)] = values
    return img


def overlay_png(path, rgb: np.ndarray, pixels: np.ndarray, labels: np.ndarray, stride: int,
                instances=None, opacity: float = 0.55) -> None:
    """Colour ``labels`` over the image (unlabelled pixels keep the image), with instance names at box centres
    of their pixels."""
    colours = label_colours(labels)
    mask = splat(pixels, (labels >= 0).astype(np.uint8), rgb.shape[:2], stride).astype(bool)
    col = splat(pixels, colours, rgb.shape[:2], stride)
    out = rgb.astype(np.float32).copy()
    out[mask] = (1 - opacity) * out[mask] + opacity * col[mask]
    out = out.astype(np.uint8)
    for inst in instances or []:
        idx = inst.point_indices.numpy() if hasattr(inst.point_indices, "numpy") else np.asarray(inst.point_indices)
        if idx.size == 0:
            continue
        u, v = pixels[idx, 0], pixels[idx, 1]
        cv2.rectangle(out, (int(u.min()), int(v.min())), (int(u.max()), int(v.max())), (255, 255, 255), 1)
        cv2.putText(out, f"{inst.class_name} {inst.score:.2f}", (int(u.min()), max(int(v.min()) - 3, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(out, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def heatmap_png(path, values: np.ndarray, rgb: np.ndarray | None = None) -> None:
    """``(H, W)`` float in [0, 1] (NaN: no value) -> a colour-mapped PNG, blended over ``rgb`` when given."""
    v = np.nan_to_num(np.clip(values, 0, 1), nan=0.0)
    heat = cv2.applyColorMap((v * 255).astype(np.uint8), cv2.COLORMAP_JET)  # BGR
    have = np.isfinite(values)
    base = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb is not None else np.zeros_like(heat)
    out = base.copy()
    out[have] = (0.35 * base[have] + 0.65 * heat[have]).astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), out):
        raise OSError(f"could not write {path}")


def write_result(out_dir, name: str, result, rgb: np.ndarray) -> dict[str, str]:
    """All outputs of one :class:`~bifusion_core.pipeline.FrameResult`; returns {kind: path}."""
    stride = result.stride
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"ply": out / f"{name}.ply", "labels_png": out / f"{name}_labels.png",
             "instances_png": out / f"{name}_instances.png", "alpha_png": out / f"{name}_alpha.png",
             "json": out / f"{name}_instances.json"}
    sem_col = label_colours(result.semantic)
    write_ply(paths["ply"], result.points, colours=result.colours,
              fields={"label": result.semantic.astype(np.int32), "instance": result.instance.astype(np.int32),
                      "score": result.score, "alpha": result.alpha,
                      "label_red": sem_col[:, 0], "label_green": sem_col[:, 1], "label_blue": sem_col[:, 2]})
    overlay_png(paths["labels_png"], rgb, result.pixels, result.semantic, stride, result.instances)
    overlay_png(paths["instances_png"], rgb, result.pixels, np.where(result.instance > 0, result.instance, -1), stride,
                result.instances)
    heatmap_png(paths["alpha_png"], result.alpha_image, rgb)
    insts = [{"id": i.id, "class_id": i.class_id, "class_name": i.class_name, "score": round(i.score, 4),
              "center": [round(float(x), 4) for x in i.center], "size": [round(float(x), 4) for x in i.size],
              "point_count": i.point_count} for i in result.instances]
    paths["json"].write_text(json.dumps({"stamp": result.stamp, "frame_id": result.frame_id,
                                         "classes": result.class_names, "instances": insts,
                                         "timings_s": result.timings}, indent=2))
    return {k: str(v) for k, v in paths.items()}


ID_PALETTE = PALETTE_RGB8
"""``(20, 3)`` uint8: map id ``i`` is drawn in ``ID_PALETTE[i % 20]`` (the node's marker colours per id)."""


def map_topdown_image(centres: np.ndarray, colours: np.ndarray, instance_ids: np.ndarray, voxel_size: float,
                      hide: np.ndarray | None = None, scale: int = 4, labels: dict | None = None) -> np.ndarray:
    """A top-down (world -z) picture of a labelled voxel map: left the mean colour, right the instances
    (each map id in its :data:`ID_PALETTE` colour, voxels of no instance in dimmed grey), both seen from above
    (per pixel the highest voxel that is not hidden).

    Args:
        centres: ``(V, 3)`` voxel centres, metres (world, z up). colours: ``(V, 3)`` uint8.
        instance_ids: ``(V,)`` map id (0: none). voxel_size: metres (one voxel = ``scale`` pixels).
        hide: ``(V,)`` bool voxels left out (e.g. the ceiling, which would cover the room).
        labels: ``{map id: text}`` written at the centre of the instance's voxels in the right panel.

    Returns:
        ``(H, 2W + gap, 3)`` uint8 RGB (a 1 x 1 black image for an empty map).
    """
    c = np.asarray(centres, np.float64).reshape(-1, 3)
    keep = np.ones(len(c), bool) if hide is None else ~np.asarray(hide, bool)
    c, col, ids = c[keep], np.asarray(colours, np.uint8)[keep], np.asarray(instance_ids, np.int64)[keep]
    if len(c) == 0:
        return np.zeros((1, 1, 3), np.uint8)
    ij = np.floor(c[:, :2] / voxel_size).astype(np.int64)
    ij -= ij.min(0)
    w, h = int(ij[:, 0].max()) + 1, int(ij[:, 1].max()) + 1
    order = np.argsort(c[:, 2], kind="stable")  # higher voxels are written last and stay on top
    rows, cols = h - 1 - ij[order, 1], ij[order, 0]  # image rows go down, world y goes up
    rgb = np.zeros((h, w, 3), np.uint8)
    inst = np.zeros((h, w, 3), np.uint8)
    rgb[rows, cols] = col[order]
    grey = (0.35 * col[order].astype(np.float32).mean(1, keepdims=True) + 40).astype(np.uint8).repeat(3, 1)
    inst[rows, cols] = np.where(ids[order, None] > 0, ID_PALETTE[ids[order] % len(ID_PALETTE)], grey)
    rgb = cv2.resize(rgb, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
    inst = cv2.resize(inst, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
    for iid, text in (labels or {}).items():
        sel = ids == iid
        if not sel.any():
            continue
        u, v = ij[sel, 0].mean() * scale, (h - 1 - ij[sel, 1].mean()) * scale
        cv2.putText(inst, str(text), (int(u) - 10, int(v)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1,
                    cv2.LINE_AA)
    gap = np.full((h * scale, 8, 3), 255, np.uint8)
    return np.concatenate([rgb, gap, inst], 1)


def map_png(path, centres, colours, instance_ids, voxel_size: float, hide=None, labels=None) -> None:
    """:func:`map_topdown_image` written to ``path``."""
    img = map_topdown_image(centres, colours, instance_ids, voxel_size, hide=hide, labels=labels)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
