"""2D branch: frozen open_clip ViT image tower -> dense patch tokens -> per-point Proj2D features (DESIGN.md §2),
and the CLIP text tower projected into the same 256-d space for class prompts.

Dense tokens
    The image (``(B, 3, H, W)``, uint8 or float in [0, 1], or one ``(H, W, 3)`` image) is normalised with the
    CLIP mean/std, optionally resized to ``Clip2DConfig.resize_to``, then zero-padded at the bottom/right to
    a multiple of the patch size (zero after normalisation = the dataset mean colour); no cropping, so every
    pixel keeps its place. The learnable positional embedding of the class token is kept, the grid part is
    bicubically interpolated from the tower's native grid (14 x 14 for ViT-B/16 @ 224) to the input's grid
    (480 x 640 -> 30 x 40 tokens). Tokens = the last transformer layer's output without the class token
    (width 768 for ViT-B/16); with ``use_final_proj`` they also pass through the tower's final ``ln_post`` and
    ``proj`` (width = the CLIP embed dim, 512 for ViT-B/16).

Sampling
    Pixel coordinates follow :mod:`bifusion_core.geometry` (pixel centres at integers). Point ``(u, v)`` sits
    at continuous image position ``(u + 0.5, v + 0.5)`` (pixel edges at integers), scaled by the resize
    factor; token ``j`` covers ``[j P, (j + 1) P)`` with its centre at ``(j + 0.5) P``. ``grid_sample`` with
    ``align_corners=False`` uses exactly this convention (normalised -1/+1 = the outer *edges* of the padded
    token grid); ``padding_mode='border'`` clamps points in the outer half-token.

Proj2D
    ``LayerNorm(C) -> GELU -> Linear(C -> 512) -> GELU -> Linear(512 -> 256)`` on the sampled tokens, then L2
    normalisation; points that are not 2D-valid get an all-zero feature.

Weights (never downloaded)
    ``weights_path`` (a local open_clip checkpoint or state dict: ``.pt``/``.pth``/``.bin`` read with
    ``torch.load(..., weights_only=True)``, or ``.safetensors``; or a BiFusion checkpoint that carries its
    towers, ``embed_weights``) wins; otherwise the ``pretrained`` tag is
    resolved to the file open_clip would have downloaded, looked up in the local caches only (Hugging Face
    hub cache, then open_clip's URL cache ``~/.cache/clip``): see :func:`resolve_pretrained`. Nothing found
    -> :class:`FileNotFoundError` naming the paths tried. ``pretrained=None`` and no ``weights_path`` ->
    random init (tests, architecture checks), logged as a warning. The tag also selects QuickGELU (OpenAI
    weights need it) and the normalisation mean/std, including when the weights come from ``weights_path``.

Frozen
    All CLIP parameters have ``requires_grad=False`` and the CLIP module stays in eval mode when the parent is
    switched to ``train()``. Dense tokens are computed without autograd unless some image-tower parameter
    has been made trainable (e.g. LoRA adapters in training stage S2).

Text
    :meth:`Clip2D.encode_text` formats ``prompt_template`` with each class name, encodes the prompts with the
    frozen text tower (L2-normalised CLIP embedding), caches that per tuple of prompts (the tower is frozen,
    so the cache never goes stale), and applies the trainable ``text_proj = Linear(embed_dim -> 256)`` and L2
    normalisation on every call (so gradients reach ``text_proj`` and its updates are always reflected).
"""
from __future__ import annotations

import logging
import os
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import configclass, spec

__all__ = [
    "TINY_MODEL",
    "CLIP_CONFIG_DIR",
    "Clip2DConfig",
    "Proj2D",
    "Clip2D",
    "register_model_configs",
    "resolve_pretrained",
    "load_state_dict_file",
    "sample_dense",
]

log = logging.getLogger(__name__)

CLIP_CONFIG_DIR = Path(__file__).resolve().parent / "clip_configs"
TINY_MODEL = "bifusion-tiny-vit"
"""A tiny open_clip ViT (64 px, patch 16, width 64, 2 layers; text width 32, embed 32) for CPU tests."""

_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def _open_clip():
    import open_clip  # imported lazily: ~5 s, and not needed for Proj2D / sampling alone

    return open_clip


def register_model_configs() -> None:
    """Add the JSON model configs of ``clip_configs/`` (e.g. :data:`TINY_MODEL`) to open_clip's registry."""
    oc = _open_clip()
    names = {p.stem for p in CLIP_CONFIG_DIR.glob("*.json")}
    if not names.issubset(set(oc.list_models())):
        oc.add_model_config(CLIP_CONFIG_DIR)


def _hf_hub_cache() -> Path:
    """The directory ``huggingface_hub`` would use (same environment variables, read at call time)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expanduser(os.environ[var]))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(os.path.expanduser(home)) / "hub"


def _how_to_provide(model_name: str, tag: str | None) -> str:
    fetch = f"open_clip.create_model({model_name!r}, pretrained={tag!r})" if tag else "open_clip.create_model(...)"
    return (
        "BiFusion never downloads at run time. Provide the weights either by (1) running once, on a machine "
        f"with network access, `python -c \"import open_clip; {fetch}\"` and copying the resulting Hugging Face "
        "cache (~/.cache/huggingface/hub, or $HF_HUB_CACHE) here (or pointing Clip2DConfig.cache_dir at it), or "
        "(2) setting Clip2DConfig.weights_path to a local open_clip checkpoint / state dict "
        f"({', '.join(WEIGHT_SUFFIXES)})."
    )


def resolve_pretrained(model_name: str, tag: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Local path of the weights file open_clip would download for ``(model_name, tag)``; never downloads.

    Looks, in this order, at: the tag's ``file`` entry if it has one; the Hugging Face hub cache
    (``cache_dir`` or the default hub cache) ``models--ORG--NAME/snapshots/REV/FILE`` for the tag's
    ``hf_hub`` repo, preferring the revision in ``refs/main`` and ``.safetensors`` over ``.bin``; open_clip's
    URL cache (``cache_dir`` or ``~/.cache/clip``) for the tag's ``url``.

    Raises:
        ValueError: the tag is unknown for this model (lists the known tags).
        FileNotFoundError: none of the candidate files exists; the message lists every path tried.
    """
    oc = _open_clip()
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    pcfg = oc.get_pretrained_cfg(model_name, tag)
    if not pcfg:
        raise ValueError(
            f"unknown pretrained tag {tag!r} for open_clip model {model_name!r}; known tags: "
            f"{oc.list_pretrained_tags_by_model(model_name)}. For a local file set Clip2DConfig.weights_path."
        )
    tried: list[str] = []
    if pcfg.get("file"):
        p = Path(pcfg["file"]).expanduser()
        if p.is_file():
            return p
        tried.append(str(p))
    hub = pcfg.get("hf_hub", "")
    if hub:
        # open_clip's convention: 'org/repo/' (default file names) or 'org/repo/filename'
        repo_id, filename = (hub.rstrip("/"), "") if hub.endswith("/") else os.path.split(hub)
        if filename:
            names = [filename]
            if filename.endswith((".bin", ".pth")):
                names.insert(0, filename[:-4] + ".safetensors")
        else:
            names = [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        repo_dir = Path(cache_dir).expanduser() if cache_dir else _hf_hub_cache()
        repo_dir = repo_dir / f"models--{repo_id.replace('/', '--')}"
        snaps = repo_dir / "snapshots"
        revs: list[Path] = []
        ref = repo_dir / "refs" / "main"
        if ref.is_file():
            revs.append(snaps / ref.read_text().strip())
        if snaps.is_dir():
            revs += sorted(p for p in snaps.iterdir() if p.is_dir() and p not in revs)
        for name in names:
            for rev in revs:
                if (rev / name).is_file():
                    return rev / name
            tried.append(str(snaps / "*" / name))
    url = pcfg.get("url", "")
    if url:
        p = (Path(cache_dir).expanduser() if cache_dir else Path("~/.cache/clip").expanduser()) / os.path.basename(url)
        if p.is_file():
            return p
        tried.append(str(p))
    raise FileNotFoundError(
        f"no cached weights for open_clip model {model_name!r} pretrained tag {tag!r}; tried: "
        + "; ".join(tried)
        + ". "
        + _how_to_provide(model_name, tag)
    )


def load_state_dict_file(
    path: str | os.PathLike, model_name: str = "ViT-B-16", tag: str | None = "openai"
) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``), unwrapping a
    ``{"state_dict": ...}`` checkpoint and a ``module.`` (DataParallel) prefix.

    Raises:
        FileNotFoundError: the file does not exist (message says how to provide weights).
        ValueError: the file is not a weights-only checkpoint (e.g. a TorchScript archive) or holds no tensors.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"CLIP weights file not found: tried {p}. " + _how_to_provide(model_name, tag))
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(p), device="cpu")
    else:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                if any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist()):
                    raise ValueError(
                        f"{p} is a TorchScript archive (like OpenAI's original ViT-B-16.pt), which cannot be read "
                        "weights-only; use the open_clip / Hugging Face weights (e.g. timm/vit_base_patch16_clip_224."
                        "openai open_clip_model.safetensors) or a plain state dict"
                    )
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors, unsupported globals, truncated file
            raise ValueError(f"could not read {p} as a weights-only torch checkpoint: {exc}") from exc
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if isinstance(sd, dict) and sd.get("format") == "bifusion-checkpoint" and isinstance(sd.get("model"), dict):
        # the towers a BiFusion checkpoint carries (Clip2DConfig.embed_weights), e.g. the shipped demo model's
        prefix = "encoder.clip.clip."
        sd = {k[len(prefix):]: v for k, v in sd["model"].items() if k.startswith(prefix) and ".lora_" not in k}
        if not sd:
            raise ValueError(f"{p} is a BiFusion checkpoint without CLIP tower weights")
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{p} does not hold a state dict of tensors")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _load_into(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    oc_model = __import__("open_clip.model", fromlist=["resize_pos_embed"])
    sd = dict(sd)
    for key in ("logit_scale", "logit_bias"):
        if key in sd and getattr(model, key, None) is not None and sd[key].ndim != getattr(model, key).ndim:
            sd[key] = sd[key].reshape(getattr(model, key).shape)
    if "logit_bias" not in sd and getattr(model, "logit_bias", None) is not None and "logit_scale" in sd:
        sd["logit_bias"] = torch.zeros_like(sd["logit_scale"])
    oc_model.resize_pos_embed(sd, model)
    missing, unexpected = model.state_dict().keys() - sd.keys(), sd.keys() - model.state_dict().keys()
    if missing or unexpected:
        raise ValueError(
            f"weights in {source} do not match the open_clip model: {len(missing)} missing keys "
            f"(e.g. {sorted(missing)[:3]}), {len(unexpected)} unexpected keys (e.g. {sorted(unexpected)[:3]})"
        )
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"weights in {source} do not fit the open_clip model: {exc}") from exc


def _bilinear_sparse(feats: torch.Tensor, uv: torch.Tensor, batch: torch.Tensor | None, patch: int,
                     scale: tuple[float, float]) -> torch.Tensor:
    """:func:`sample_dense` without autograd: each point's four bilinear weights (``grid_sample``'s
    ``align_corners=False`` token coordinates ``(u + 0.5) s / P - 0.5``, clamped to the border) as a CSR matrix
    times the token rows. Computed in the features' dtype (float32 for half precision, autocast or not)."""
    B, C, Hp, Wp = feats.shape
    n = uv.shape[0]
    dev = feats.device
    dtype = feats.dtype if feats.dtype in (torch.float32, torch.float64) else torch.float32
    uvf = uv.to(device=dev, dtype=torch.float64)
    ix = ((uvf[:, 0] + 0.5) * scale[0] / patch - 0.5).nan_to_num(nan=(Wp - 1) / 2).clamp(0, Wp - 1)
    iy = ((uvf[:, 1] + 0.5) * scale[1] / patch - 0.5).nan_to_num(nan=(Hp - 1) / 2).clamp(0, Hp - 1)
    x0, y0 = ix.floor().to(torch.int64), iy.floor().to(torch.int64)
    x1, y1 = (x0 + 1).clamp_max(Wp - 1), (y0 + 1).clamp_max(Hp - 1)
    ax, ay = ix - x0, iy - y0
    base = (batch.to(dev).to(torch.int64) * (Hp * Wp)) if batch is not None else torch.zeros(n, dtype=torch.int64, device=dev)
    cols = torch.stack([base + y0 * Wp + x0, base + y0 * Wp + x1, base + y1 * Wp + x0, base + y1 * Wp + x1], 1)
    vals = torch.stack([(1 - ax) * (1 - ay), ax * (1 - ay), (1 - ax) * ay, ax * ay], 1).to(dtype)
    crow = torch.arange(0, 4 * n + 1, 4, device=dev, dtype=torch.int64)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is long stable
        warnings.simplefilter("ignore", UserWarning)
        weights = torch.sparse_csr_tensor(crow, cols.reshape(-1), vals.reshape(-1), (n, B * Hp * Wp),
                                          check_invariants=False)
    rows = feats.detach().permute(0, 2, 3, 1).reshape(B * Hp * Wp, C).to(dtype)
    with torch.autocast(dev.type, enabled=False):  # autocast would cast the product to half: no sparse kernel
        return (weights @ rows).to(feats.dtype)


def sample_dense(
    feats: torch.Tensor,
    uv: torch.Tensor,
    batch: torch.Tensor | None,
    patch: int,
    scale: tuple[float, float] = (1.0, 1.0),
) -> torch.Tensor:
    """Bilinearly sample token maps at point pixels.

    Args:
        feats: ``(B, C, Hp, Wp)`` token map covering a (resized, padded) image of ``(Hp P, Wp P)`` pixels.
        uv: ``(N, 2)`` pixel coordinates ``(u, v)`` in the original image (pixel centres at integers).
        batch: ``(N,)`` image index of each point (``None``: all image 0).
        patch: patch size ``P`` in (resized) pixels.
        scale: ``(sx, sy)`` = resized size / original size.

    Returns:
        ``(N, C)``; ``grid_sample`` with ``align_corners=False``, ``padding_mode='border'``. Without autograd
        (inference) the same weights are applied as one sparse ``(N, B Hp Wp)`` x ``(B Hp Wp, C)`` product
        (:func:`_bilinear_sparse`), about 10x faster on the CPU than ``grid_sample`` for 256 channels.
    """
    B, C, Hp, Wp = feats.shape
    n = uv.shape[0]
    if uv.dim() != 2 or uv.shape[1] != 2:
        raise ValueError(f"uv must be (N, 2), got {tuple(uv.shape)}")
    if not (torch.is_grad_enabled() and feats.requires_grad):
        return _bilinear_sparse(feats, uv, batch, patch, scale)
    uvf = uv.to(device=feats.device, dtype=torch.float64)
    gx = 2.0 * (uvf[:, 0] + 0.5) * scale[0] / (Wp * patch) - 1.0
    gy = 2.0 * (uvf[:, 1] + 0.5) * scale[1] / (Hp * patch) - 1.0
    grid = torch.nan_to_num(torch.stack([gx, gy], dim=1), nan=0.0).to(feats.dtype)
    out = feats.new_zeros(n, C)
    if batch is None:
        batch = torch.zeros(n, dtype=torch.int64, device=feats.device)
    batch = batch.to(feats.device)
    for b in range(B):
        sel = torch.nonzero(batch == b, as_tuple=True)[0]
        if sel.numel() == 0:
            continue
        s = F.grid_sample(
            feats[b : b + 1], grid[sel].view(1, 1, -1, 2), mode="bilinear", padding_mode="border", align_corners=False
        )  # (1, C, 1, n_b)
        out = out.index_copy(0, sel, s[0, :, 0].T)
    return out


class Proj2D(nn.Module):
    """``LayerNorm(in) -> GELU -> Linear(in -> hidden) -> GELU -> Linear(hidden -> out)`` then L2 normalise.

    ``forward(x (N, in_dim)) -> (N, out_dim)`` unit norm.
    """

    def __init__(self, in_dim: int = 768, hidden: int = 512, out_dim: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim), nn.GELU(), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)


class _DropOpenClipRandomInit(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded for model")


@contextmanager
def _quiet_open_clip_init():
    """Drop open_clip's root-logger warning that a model it built without weights "initialized randomly":
    :class:`Clip2D` always builds the tower that way and then loads the weights itself, or says it has none."""
    f = _DropOpenClipRandomInit()
    root = logging.getLogger()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


@configclass
class Clip2DConfig:
    """2D branch configuration (see the module docstring for the weight lookup).

    Attributes:
        model_name: open_clip architecture (``"ViT-B-16"``; :data:`TINY_MODEL` for tests).
        pretrained: open_clip pretrained tag looked up in the local cache (``None``: none).
        weights_path: local weights file; takes precedence over the tag's cache lookup.
        cache_dir: Hugging Face hub cache / open_clip URL cache directory to search (default: the usual ones).
        proj_hidden / out_dim: Proj2D sizes (512, 256).
        use_final_proj: pass tokens through the tower's ``ln_post`` and ``proj`` (width = embed dim).
        prompt_template: text prompt, ``{name}`` is replaced by the class name.
        quick_gelu: ``None`` follows the tag (OpenAI weights: True); a bool forces it.
        resize_to: optional ``(H, W)`` to resize images to before the tower (coordinates are mapped).
        max_side: without ``resize_to``, images whose long side exceeds this many pixels are downscaled (aspect
            kept, antialiased) before the tower, which bounds its cost whatever the camera sends (attention is
            quadratic in the token count: a 4000x3000 frame would be 47,000 tokens). Default 640, the long side
            of the training frames (ScanNet 640x480); ``None``: no limit.
        image_mean / image_std: override the tag's normalisation.
        embed_weights: BiFusion checkpoints carry this tower's weights (for small towers such as the stand-in
            ones of :mod:`bifusion_core.train.stand_in_clip`), so that the checkpoint alone rebuilds the model;
            such a checkpoint's config names no weights file. Off: a tower loaded from ``weights_path`` or a tag
            is left out of checkpoints (ViT-B/16 is 600 MB) and read from its own file again.
    """

    model_name: str = "ViT-B-16"
    pretrained: str | None = "openai"
    weights_path: str | None = None
    cache_dir: str | None = None
    proj_hidden: int = spec(512, ge=1)
    out_dim: int = spec(256, ge=1)
    use_final_proj: bool = False
    prompt_template: str = "a photo of a {name}."
    quick_gelu: bool | None = None
    resize_to: tuple[int, int] | None = spec(None, ge=1)
    max_side: int | None = spec(640, ge=16)
    image_mean: tuple[float, float, float] | None = None
    image_std: tuple[float, float, float] | None = spec(None, gt=0)
    embed_weights: bool = False

    def __post_init__(self) -> None:
        if not self.model_name:
            raise ValueError("model_name must be a non-empty string")
        if self.model_name.startswith(("hf-hub:", "local-dir:")):
            raise ValueError(
                "hf-hub:/local-dir: model names are not supported; use an architecture name and weights_path"
            )
        if "{name}" not in self.prompt_template:
            raise ValueError(f"prompt_template must contain '{{name}}', got {self.prompt_template!r}")
        if self.weights_path is not None and not self.weights_path.endswith(WEIGHT_SUFFIXES):
            raise ValueError(f"weights_path must end with one of {WEIGHT_SUFFIXES}, got {self.weights_path!r}")


class Clip2D(nn.Module):
    """Frozen open_clip tower + Proj2D (+ text projection).

    ``forward(images, uv (N,2), batch (N,) | None, valid (N,) | None) -> f2d (N, out_dim)``: unit-norm rows,
    zero rows where ``valid`` is False. Submodules: ``clip`` (frozen open_clip model), ``proj2d``, ``text_proj``.
    """

    def __init__(self, cfg: Clip2DConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or Clip2DConfig()
        oc = _open_clip()
        register_model_configs()
        if cfg.model_name not in oc.list_models():
            raise ValueError(f"unknown open_clip model {cfg.model_name!r}")
        pcfg = oc.get_pretrained_cfg(cfg.model_name, cfg.pretrained) if cfg.pretrained else {}
        if cfg.pretrained and not pcfg and cfg.weights_path is None:
            raise ValueError(
                f"unknown pretrained tag {cfg.pretrained!r} for {cfg.model_name!r}; known: "
                f"{oc.list_pretrained_tags_by_model(cfg.model_name)}"
            )
        # locate the weights before building anything (fail fast, no download)
        if cfg.weights_path is not None:
            path = Path(cfg.weights_path).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"CLIP weights file not found: tried {path} (Clip2DConfig.weights_path). "
                    + _how_to_provide(cfg.model_name, cfg.pretrained)
                )
        elif cfg.pretrained:
            path = resolve_pretrained(cfg.model_name, cfg.pretrained, cfg.cache_dir)
        else:
            path = None
        quick_gelu = bool(pcfg.get("quick_gelu", False)) if cfg.quick_gelu is None else cfg.quick_gelu
        with _quiet_open_clip_init():  # weights are loaded (or their absence logged) just below, by us
            self.clip = oc.create_model(
                cfg.model_name, pretrained=None, load_weights=False, device="cpu", force_quick_gelu=quick_gelu
            )
        if path is not None:
            _load_into(self.clip, load_state_dict_file(path, cfg.model_name, cfg.pretrained), str(path))
            log.info("loaded CLIP weights for %s from %s", cfg.model_name, path)
        elif cfg.embed_weights:
            log.debug("Clip2D: tower weights come with the checkpoint (embed_weights)")
        else:
            log.warning("Clip2D: no pretrained weights (pretrained=None, weights_path=None): random CLIP init")
        self.weights_source = str(path) if path is not None else None

        vis = self.clip.visual
        if not isinstance(vis, oc.transformer.VisionTransformer) or vis.attn_pool is not None:
            raise ValueError(
                f"{cfg.model_name}: only open_clip ViT image towers without attention pooling are supported"
            )
        for p in self.clip.parameters():
            p.requires_grad_(False)
        self.clip.eval()
        self.patch = int(vis.patch_size[0])
        if vis.patch_size[0] != vis.patch_size[1]:
            raise ValueError("non-square patches are not supported")
        self.width = int(vis.conv1.out_channels)
        text_proj = getattr(self.clip, "text_projection", None)
        self.embed_dim = int(text_proj.shape[1]) if isinstance(text_proj, torch.Tensor) else int(vis.output_dim)
        self.token_dim = int(vis.output_dim) if cfg.use_final_proj and vis.proj is not None else self.width
        mean = cfg.image_mean or tuple(pcfg.get("mean", _OPENAI_MEAN))
        std = cfg.image_std or tuple(pcfg.get("std", _OPENAI_STD))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

        self.proj2d = Proj2D(self.token_dim, cfg.proj_hidden, cfg.out_dim)
        self.text_proj = nn.Linear(self.embed_dim, cfg.out_dim)
        self.tokenizer = oc.get_tokenizer(cfg.model_name)
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}

    # -- modes -------------------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen tower: dropout / patch dropout off, always
        return self

    # -- image side --------------------------------------------------------------------------------------
    def preprocess(self, images) -> tuple[torch.Tensor, tuple[int, int], tuple[float, float]]:
        """Images -> normalised, resized, padded ``(B, 3, Hpad, Wpad)``; returns also the original ``(H, W)``
        and the scale ``(sx, sy)`` (resized / original)."""
        x = images if isinstance(images, torch.Tensor) else torch.as_tensor(images)
        if x.dim() == 3 and x.shape[-1] == 3:
            x = x.permute(2, 0, 1).unsqueeze(0)
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) or one (H, W, 3) image, got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif not x.is_floating_point():
            raise ValueError(f"images must be uint8 or float in [0, 1], got {x.dtype}")
        x = x.to(device=self.mean.device, dtype=torch.float32)
        H, W = x.shape[-2:]
        x = (x - self.mean) / self.std
        sx = sy = 1.0
        target = self.input_size(int(H), int(W))
        if target != (H, W):
            h2, w2 = target
            x = F.interpolate(x, size=(h2, w2), mode="bilinear", align_corners=False, antialias=h2 < H or w2 < W)
            sx, sy = w2 / W, h2 / H
        P = self.patch
        ph, pw = (-x.shape[-2]) % P, (-x.shape[-1]) % P
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), value=0.0)
        return x, (int(H), int(W)), (sx, sy)

    def input_size(self, H: int, W: int) -> tuple[int, int]:
        """``(H, W)`` of the image the tower sees for an ``H x W`` input: ``resize_to`` when set, else the
        input downscaled so that its long side is at most ``max_side`` (aspect kept, sides rounded)."""
        if self.cfg.resize_to is not None:
            return tuple(self.cfg.resize_to)
        m = self.cfg.max_side
        if m is None or max(H, W) <= m:
            return H, W
        f = m / max(H, W)
        return max(1, round(H * f)), max(1, round(W * f))

    def _pos_embed(self, hp: int, wp: int) -> torch.Tensor:
        vis = self.clip.visual
        pos = vis.positional_embedding
        g0, g1 = vis.grid_size
        if (hp, wp) == (g0, g1):
            return pos
        grid = pos[1:].reshape(1, g0, g1, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid.float(), size=(hp, wp), mode="bicubic", align_corners=False, antialias=hp < g0 or wp < g1
        ).to(pos.dtype)
        return torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(hp * wp, -1)], dim=0)

    def dense_tokens(self, images) -> tuple[torch.Tensor, tuple[int, int], tuple[float, float]]:
        """``images`` -> ``(tokens (B, token_dim, Hp, Wp), (H, W), (sx, sy))``."""
        x, hw, scale = self.preprocess(images)
        vis = self.clip.visual
        need_grad = torch.is_grad_enabled() and any(p.requires_grad for p in vis.parameters())
        with torch.set_grad_enabled(need_grad):
            dtype = vis.conv1.weight.dtype
            t = vis.conv1(x.to(dtype))  # (B, width, Hp, Wp)
            B, Cw, hp, wp = t.shape
            t = t.flatten(2).transpose(1, 2)  # (B, Hp*Wp, width)
            pos = self._pos_embed(hp, wp).to(t.dtype)
            cls = (vis.class_embedding.to(t.dtype) + pos[0]).view(1, 1, -1).expand(B, 1, Cw)
            t = torch.cat([cls, t + pos[1:]], dim=1)
            t = vis.ln_pre(t)
            t = vis.transformer(t)
            tok = t[:, 1:]
            if self.cfg.use_final_proj:
                tok = vis.ln_post(tok)
                if vis.proj is not None:
                    tok = tok @ vis.proj
            tok = tok.transpose(1, 2).reshape(B, tok.shape[-1], hp, wp)
        return tok.float(), hw, scale

    def forward(
        self,
        images,
        uv: torch.Tensor,
        batch: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
        tokens: tuple | None = None,
    ) -> torch.Tensor:
        """Per-point f2D. ``tokens`` may pass a precomputed :meth:`dense_tokens` result (then ``images`` is unused)."""
        tok, _, scale = tokens if tokens is not None else self.dense_tokens(images)
        n = uv.shape[0]
        if batch is not None and (batch.shape != (n,) or batch.is_floating_point()):
            raise ValueError(f"batch must be an (N,) = ({n},) integer tensor, got {tuple(batch.shape)}")
        if batch is not None and n and (int(batch.min()) < 0 or int(batch.max()) >= tok.shape[0]):
            raise ValueError(f"batch indices must be in [0, {tok.shape[0]}) (number of images)")
        # Proj2D runs on the token grid (B*Hp*Wp tokens, e.g. 1200 at 480x640) and the 256-d result is sampled
        # at the points, then normalised: DESIGN.md's "tokens -> Proj2D -> L2 -> f2D (sampled at each point's
        # pixel)", and ~60x cheaper than projecting every one of ~10^5 sampled points.
        grid = self.proj2d.net(tok.permute(0, 2, 3, 1).to(self.proj2d.net[0].weight.dtype)).permute(0, 3, 1, 2)
        f2d = F.normalize(sample_dense(grid, uv, batch, self.patch, scale), dim=-1)
        if valid is not None:
            if valid.shape != (n,):
                raise ValueError(f"valid must be (N,) = ({n},), got {tuple(valid.shape)}")
            f2d = f2d * valid.to(device=f2d.device, dtype=f2d.dtype).unsqueeze(1)
        return f2d

    # -- text side ---------------------------------------------------------------------------------------
    def clip_text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """Frozen, L2-normalised CLIP text embeddings ``(K, embed_dim)`` of the prompts, cached per tuple."""
        key = tuple(prompts)
        device = self.text_proj.weight.device
        emb = self._text_cache.get(key)
        if emb is None or emb.device != device:
            with torch.no_grad():
                tokens = self.tokenizer(list(key)).to(device)
                emb = self.clip.encode_text(tokens, normalize=True).float()
            self._text_cache[key] = emb
        return emb

    def encode_text(self, class_names: Sequence[str]) -> torch.Tensor:
        """Class names -> ``(K, out_dim)`` unit-norm text features in the fused space (through ``text_proj``)."""
        if isinstance(class_names, str) or not len(class_names):
            raise ValueError("class_names must be a non-empty sequence of strings")
        prompts = [self.cfg.prompt_template.format(name=str(c)) for c in class_names]
        emb = self.clip_text_embeddings(prompts)
        return F.normalize(self.text_proj(emb.to(self.text_proj.weight.dtype)), dim=-1)

    def clear_text_cache(self) -> None:
        self._text_cache.clear()
