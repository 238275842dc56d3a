"""The map on disk. :func:`save_map_files` writes, into one directory:

* ``map.ply`` -- binary little-endian PLY of the labelled voxel centres: ``x y z`` (float32, metres),
  ``red green blue`` (uchar, mean colour), ``label`` (int32, argmax class index, -1 none), ``instance``
  (int32, map id, 0 none). For viewing; it does not hold the evidence.
* ``map.png`` -- the map seen from above (:func:`bifusion_core.io.render.map_topdown_image`): mean colour
  beside the instances coloured by id and labelled ``id class``; voxels labelled ``ceiling`` are left out.
* ``instances.json`` -- format/version, the :class:`MapConfig`, the class names, ``next_id``, and per
  instance: id, class_id (+ class_name with class names), score, merge_count, box_center / box_size /
  box_min / box_max (metres), first_seen / last_seen (seconds), num_voxels.
* ``map_state.npz`` -- the exact state of both maps (voxel sets, class evidence, embeddings, per-voxel
  evidence and colour sums); :func:`load_map_files` restores the map from it and ``instances.json``.
* with ``scene_points``: ``scannet/SCENE.txt`` and ``scannet/pred_mask/SCENE_K.txt``, the ScanNet benchmark's
  instance-prediction format read by ``python -m bifusion_core.eval instance --pred DIR/scannet --gt GT``
  (:mod:`bifusion_core.eval.io`): one line ``pred_mask/SCENE_K.txt LABEL_ID CONFIDENCE`` per instance, and
  per mask file one 0/1 per scene point (1: the point's voxel is in the instance's voxel set). LABEL_ID is
  the ScanNet label id of the instance's class (``label_ids[class_id]``), CONFIDENCE its score. Instances
  whose class has no label id (index outside ``label_ids`` or id <= 0) or whose mask is empty are left out.
  The directory is meant for one scene (the evaluator scores every ``*.txt`` in it).
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from ..config import from_dict
from ..io.ply import write_ply
from .config import MapConfig
from .instance_map import InstanceMap, MapInstance
from .observation import check_points
from .voxel_keys import point_keys
from .voxel_map import LabelledVoxelMap

FORMAT, VERSION = "bifusion_core.mapping", 1
MAP_PLY, INSTANCES_JSON, STATE_NPZ, SCANNET_DIR = "map.ply", "instances.json", "map_state.npz", "scannet"
MAP_PNG = "map.png"
_SCENE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def instance_record(inst: MapInstance, class_names=None) -> dict:
    """The ``instances.json`` entry of one instance."""
    rec = {"id": inst.id, "class_id": inst.class_id}
    if class_names is not None:
        rec["class_name"] = class_names[inst.class_id] if inst.class_id < len(class_names) else None
    rec.update(score=inst.score, merge_count=inst.merge_count, box_center=inst.box_center.tolist(),
               box_size=inst.box_size.tolist(), box_min=inst.box_min.tolist(), box_max=inst.box_max.tolist(),
               first_seen=inst.first_seen, last_seen=inst.last_seen, num_voxels=inst.num_voxels)
    return rec


def scannet_label_ids(label_ids, class_names) -> np.ndarray:
    """``(C,)`` int64 ScanNet label id per class index: ``label_ids`` as given, else derived from the ScanNet200
    names (:func:`bifusion_core.data.scannet.classes.label_ids`; 0 for other names)."""
    if label_ids is None:
        if class_names is None:
            raise ValueError("ScanNet output needs label_ids (or class names to derive them from)")
        from ..data.scannet.classes import label_ids as names_to_ids  # the class tables (and torch): lazily

        return names_to_ids(class_names)
    ids = np.asarray(label_ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(f"label_ids must be a (C,) integer array, got shape {ids.shape} dtype {ids.dtype}")
    return ids.astype(np.int64)


def write_scannet_instances(out_dir, scene: str, instances, scene_points: np.ndarray, label_ids: np.ndarray,
                            voxel_size: float) -> Path:
    """Write ``instances`` as ScanNet instance predictions over ``scene_points (P, 3)`` (format above); returns
    ``out_dir/scene.txt``."""
    from ..eval.io import write_instance_predictions

    if not isinstance(scene, str) or not _SCENE_NAME.match(scene):
        raise ValueError(f"scene must be a plain file name (letters, digits, _ . -), got {scene!r}")
    keys = point_keys(scene_points, voxel_size)
    masks, labels, scores = [], [], []
    for inst in instances:
        if not 0 <= inst.class_id < len(label_ids) or label_ids[inst.class_id] <= 0:
            continue
        mask = np.isin(keys, inst.voxel_keys)
        if mask.any():
            masks.append(mask)
            labels.append(int(label_ids[inst.class_id]))
            scores.append(inst.score)
    return write_instance_predictions(out_dir, scene, masks, labels, scores)


def save_map_files(directory, config: MapConfig, class_names, instance_map: InstanceMap,
                   voxel_map: LabelledVoxelMap, scene_points=None, label_ids=None,
                   scene: str = "scene") -> dict[str, Path]:
    """Write the files listed in the module docstring; returns their paths by kind."""
    directory = Path(directory)
    if scene_points is not None:
        scene_points = check_points("scene_points", scene_points)
        label_ids = scannet_label_ids(label_ids, class_names)
    directory.mkdir(parents=True, exist_ok=True)
    out = {"ply": directory / MAP_PLY, "png": directory / MAP_PNG, "json": directory / INSTANCES_JSON,
           "state": directory / STATE_NPZ}
    centres, labels = voxel_map.centres(), voxel_map.labels
    write_ply(out["ply"], centres.astype(np.float32),
              fields={"label": labels.astype(np.int32), "instance": voxel_map.instance_ids.astype(np.int32)},
              colours=voxel_map.colours)
    instances = instance_map.instances
    from ..io.render import map_png  # OpenCV: only when a map is saved

    names = list(class_names or [])
    hide = np.isin(labels, [k for k, n in enumerate(names) if n == "ceiling"])
    tags = {i.id: f"{i.id} {names[i.class_id]}" if i.class_id < len(names) else str(i.id) for i in instances}
    map_png(out["png"], centres, voxel_map.colours, voxel_map.instance_ids, config.voxel_size, hide=hide,
            labels=tags)
    doc = {"format": FORMAT, "version": VERSION, "config": dataclasses.asdict(config),
           "class_names": None if class_names is None else list(class_names), "next_id": instance_map.next_id,
           "num_voxels": len(voxel_map), "instances": [instance_record(i, class_names) for i in instances]}
    out["json"].write_text(json.dumps(doc, indent=1))
    state = {f"inst_{k}": v for k, v in instance_map.to_arrays().items()}
    state.update({f"vox_{k}": v for k, v in voxel_map.to_arrays().items()})
    np.savez_compressed(out["state"], **state)
    if scene_points is not None:
        out["scannet"] = write_scannet_instances(directory / SCANNET_DIR, scene, instances, scene_points,
                                                 label_ids, config.voxel_size)
    return out


def load_map_files(directory) -> tuple[MapConfig, tuple[str, ...] | None, InstanceMap, LabelledVoxelMap]:
    """``(config, class_names, instance_map, voxel_map)`` from what :func:`save_map_files` wrote."""
    directory = Path(directory)
    meta_path, state_path = directory / INSTANCES_JSON, directory / STATE_NPZ
    for p in (meta_path, state_path):
        if not p.is_file():
            raise FileNotFoundError(f"map file not found: {p}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path}: not JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{meta_path}: not a {FORMAT} map of version {VERSION}")
    config = from_dict(MapConfig, meta.get("config"), f"{meta_path} config")
    names = meta.get("class_names")
    with np.load(state_path, allow_pickle=False) as z:
        inst = {k[5:]: z[k] for k in z.files if k.startswith("inst_")}
        vox = {k[4:]: z[k] for k in z.files if k.startswith("vox_")}
    instance_map = InstanceMap.from_arrays(config, inst)
    voxel_map = LabelledVoxelMap.from_arrays(config.voxel_size, config.max_voxels, vox)
    listed = sorted(int(r["id"]) for r in meta.get("instances", []))
    if listed != list(instance_map.ids) or int(meta.get("next_id", -1)) != instance_map.next_id:
        raise ValueError(f"{meta_path} and {state_path} describe different maps")
    return config, None if names is None else tuple(names), instance_map, voxel_map
