"""Cross-modal consistency of a generated image with its conditions, and the seed's weighted loss.

    L_consistency = sum_i lambda_i L_i,   L_i = 1 - metric_i   (metrics in [0, 1], higher is better)

Evaluation metrics (numpy, on an (H, W, 3) image in [0, 1] at the condition's size):
- text: share of the oracle's checks of the caption that pass;
- sketch: F1 of edges within 1 px: predicted edges = pixels whose colour differs from a 4-neighbour's
  by more than EDGE_THRESHOLD (max over channels), matched to the target contour with a 3x3 tolerance;
- depth: Spearman rank correlation between the target nearness map and the image's depth read through
  the scene (each foreground pixel gets the depth of the scene object whose colour is nearest; the
  background 0), mapped from [-1, 1] to [0, 1]; there is no monocular depth model for Shapes World, so
  this measures that objects stand where the depth map puts them, in its order;
- mask: mean IoU over shape classes present in target or prediction, prediction = the oracle's
  detections re-rendered as silhouettes;
- reference: F1 of the multisets of (colour, shape) of the oracle's objects vs the reference's objects.

`consistency_loss` is the differentiable form for training: soft edge Dice for the sketch, 1 - Pearson
correlation for depth (a smooth stand-in for Spearman), 1 - soft mean IoU for class probabilities, and
any text loss the caller computes; the same weighted sum.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from scipy import ndimage, stats

from t2ikit.world import vocab
from t2ikit.world.oracle import detect, score
from t2ikit.world.render import shape_mask

EDGE_THRESHOLD = 0.2  # colour step (max over RGB) that makes an edge pixel
DEFAULT_LAMBDAS = {"text": 1.0, "sketch": 1.0, "depth": 1.0, "mask": 1.0, "reference": 1.0}


# ----------------------------------------------------------------------------------------------------
# Metrics (evaluation)


def image_edges(rgb: np.ndarray, threshold: float = EDGE_THRESHOLD) -> np.ndarray:
    """(H, W) bool: pixels whose colour steps by > threshold to the right or below neighbour (both sides)."""
    dx = np.abs(np.diff(rgb, axis=1)).max(-1) > threshold  # (H, W-1)
    dy = np.abs(np.diff(rgb, axis=0)).max(-1) > threshold  # (H-1, W)
    e = np.zeros(rgb.shape[:2], bool)
    e[:, :-1] |= dx
    e[:, 1:] |= dx
    e[:-1] |= dy
    e[1:] |= dy
    return e


def edge_f1(pred: np.ndarray, target: np.ndarray, tolerance: int = 1) -> float:
    """F1 of edge pixels, a predicted pixel counting when a target pixel is within `tolerance` px (and back)."""
    pred, target = pred.astype(bool), target.astype(bool)
    if not target.any() and not pred.any():
        return 1.0
    if not target.any() or not pred.any():
        return 0.0
    st = np.ones((2 * tolerance + 1,) * 2, bool)
    precision = (pred & ndimage.binary_dilation(target, st)).sum() / pred.sum()
    recall = (target & ndimage.binary_dilation(pred, st)).sum() / target.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def sketch_consistency(rgb: np.ndarray, sketch: np.ndarray) -> float:
    return edge_f1(image_edges(rgb), sketch > 0.5)


def scene_depth(rgb: np.ndarray, scene) -> np.ndarray:
    """(H, W) nearness read from an image through the scene's object colours (see module docstring)."""
    bg = np.asarray(vocab.BACKGROUNDS[scene.background], np.float32)
    colours = np.asarray([vocab.COLOURS[o.colour] for o in scene.objects], np.float32)  # (n, 3)
    depths = np.asarray([o.depth for o in scene.objects], np.float32)
    d_bg = np.abs(rgb - bg).max(-1)  # (H, W)
    d_obj = np.abs(rgb[:, :, None] - colours[None, None]).max(-1)  # (H, W, n)
    nearest = d_obj.argmin(-1)
    fg = d_obj.min(-1) < d_bg
    return np.where(fg, depths[nearest], 0.0).astype(np.float32)


def depth_consistency(rgb: np.ndarray, depth: np.ndarray, scene) -> float:
    pred = scene_depth(rgb, scene)
    if pred.std() == 0 or depth.std() == 0:
        return 0.0
    rho = stats.spearmanr(pred.ravel(), depth.ravel()).statistic
    return float((rho + 1) / 2) if np.isfinite(rho) else 0.0


def detected_classes(rgb: np.ndarray) -> np.ndarray:
    """(K, H, W) bool: the oracle's detections re-rendered as class silhouettes at the image size."""
    h = rgb.shape[0]
    s = h / vocab.REFERENCE_RESOLUTION
    out = np.zeros((len(vocab.SHAPES), h, rgb.shape[1]), bool)
    for d in detect(rgb).detections:
        if d.shape is None:
            continue
        e = max(1, round(d.extent * s))
        x0, y0 = round((d.centre[0] - d.extent / 2) * s), round((d.centre[1] - d.extent / 2) * s)
        m = shape_mask(d.shape, e)
        ys, xs = slice(max(y0, 0), min(y0 + e, h)), slice(max(x0, 0), min(x0 + e, rgb.shape[1]))
        out[vocab.SHAPES.index(d.shape), ys, xs] |= m[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
    return out


def mean_iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean IoU over classes present in either (K, H, W) bool map; 1 if none is present anywhere."""
    ious = []
    for p, t in zip(pred.astype(bool), target.astype(bool)):
        union = (p | t).sum()
        if union:
            ious.append((p & t).sum() / union)
    return float(np.mean(ious)) if ious else 1.0


def mask_consistency(rgb: np.ndarray, classes: np.ndarray) -> float:
    return mean_iou(detected_classes(rgb), classes > 0.5)


def reference_consistency(rgb: np.ndarray, reference_objects) -> float:
    """F1 of (colour, shape) multisets: the oracle's objects in the image vs the reference's objects."""
    pred = Counter((d.colour, d.shape) for d in detect(rgb).detections)
    ref = Counter((o.colour, o.shape) for o in reference_objects)
    hit = sum((pred & ref).values())
    if not pred and not ref:
        return 1.0
    return 0.0 if hit == 0 else 2 * hit / (sum(pred.values()) + sum(ref.values()))


def text_consistency(rgb: np.ndarray, spec) -> float:
    s = score(rgb, spec)
    return s.n_passed / max(len(s.checks), 1)


def consistency(rgb: np.ndarray, scene, modalities, names=("text", "sketch", "depth", "mask", "reference")) -> dict:
    """{name: metric in [0, 1]} of an (H, W, 3) image against the scene it should show."""
    out = {}
    for name in names:
        if name == "text":
            out[name] = text_consistency(rgb, scene.spec)
        elif name == "sketch":
            out[name] = sketch_consistency(rgb, modalities.sketch)
        elif name == "depth":
            out[name] = depth_consistency(rgb, modalities.depth, scene)
        elif name == "mask":
            out[name] = mask_consistency(rgb, modalities.classes)
        elif name == "reference":
            out[name] = reference_consistency(rgb, scene.reference_objects)
        else:
            raise ValueError(f"unknown consistency {name!r}; allowed: text, sketch, depth, mask, reference")
    return out


def weighted_consistency_loss(metrics: dict[str, float], lambdas: dict[str, float] | None = None) -> float:
    """L_consistency = sum_i lambda_i (1 - metric_i) over the metrics given."""
    lambdas = {**DEFAULT_LAMBDAS, **(lambdas or {})}
    unknown = set(metrics) - set(lambdas)
    if unknown:
        raise ValueError(f"no lambda for {sorted(unknown)}; known: {sorted(lambdas)}")
    return float(sum(lambdas[k] * (1 - v) for k, v in metrics.items()))


# ----------------------------------------------------------------------------------------------------
# Differentiable form (training)


def soft_edges(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 1, H, W) edge strength in [0, 1] from colour steps (Sobel-free, 2-tap)."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().amax(1, keepdim=True)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().amax(1, keepdim=True)
    e = torch.zeros_like(images[:, :1])
    e = e + torch.nn.functional.pad(dx, (0, 1)) + torch.nn.functional.pad(dx, (1, 0))
    e = e + torch.nn.functional.pad(dy, (0, 0, 0, 1)) + torch.nn.functional.pad(dy, (0, 0, 1, 0))
    return torch.sigmoid((e - EDGE_THRESHOLD) * 20)


def dice_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 - soft Dice (= soft F1) per batch, averaged."""
    inter = (pred * target).flatten(1).sum(1)
    return (1 - (2 * inter + eps) / (pred.flatten(1).sum(1) + target.flatten(1).sum(1) + eps)).mean()


def pearson_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 - Pearson correlation per sample, halved into [0, 1], averaged."""
    p, t = pred.flatten(1), target.flatten(1)
    p, t = p - p.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    r = (p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1) + eps)
    return ((1 - r) / 2).mean()


def soft_iou_loss(probs: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 - soft mean IoU over classes; probs, target (B, K, H, W)."""
    inter = (probs * target).sum((2, 3))
    union = (probs + target - probs * target).sum((2, 3))
    return (1 - (inter + eps) / (union + eps)).mean()


def consistency_loss(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                     lambdas: dict[str, float] | None = None) -> torch.Tensor:
    """Differentiable sum_i lambda_i L_i over the keys of `pred`.

    pred: "image" (B, 3, H, W) in [0, 1] for the sketch term; "depth" (B, 1, H, W) predicted nearness;
    "mask" (B, K, H, W) class probabilities; "text" a scalar loss already computed by the caller.
    target: "sketch", "depth", "mask" maps of the same shapes.
    """
    lambdas = {**DEFAULT_LAMBDAS, **(lambdas or {})}
    total = torch.zeros(())
    if "image" in pred and "sketch" in target:
        total = total + lambdas["sketch"] * dice_loss(soft_edges(pred["image"]),
                                                      (torch.nn.functional.max_pool2d(target["sketch"], 3, 1, 1)))
    if "depth" in pred:
        total = total + lambdas["depth"] * pearson_loss(pred["depth"], target["depth"])
    if "mask" in pred:
        total = total + lambdas["mask"] * soft_iou_loss(pred["mask"], target["mask"])
    if "text" in pred:
        total = total + lambdas["text"] * pred["text"]
    return total
