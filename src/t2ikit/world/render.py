"""Exact rendering of a scene into every modality: RGB, depth, sketch, segmentation, reference image.

Shapes are drawn from cached binary sprites (pixel-centre sampling, no anti-aliasing), so a render is a
few array assignments per object and every modality is exact. Conventions:
- rgb, reference: float32 (H, W, 3) in [0, 1];
- depth: float32 (H, W), nearness: background 0, an object's silhouette its `depth` in (0, 1]
  (larger is nearer, as MiDaS-style depth maps for ControlNet are);
- sketch: float32 (H, W), 1 on the one-pixel outer contour of every silhouette;
- instances: int16 (H, W), 0 background, k + 1 on object k's silhouette (the shape's whole region,
  also when it is drawn outlined), nearer objects on top;
- classes: bool (K, H, W), one channel per shape in vocab.SHAPES (union of that shape's silhouettes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from t2ikit.world import vocab
from t2ikit.world.scene import Obj, Scene

_COLOUR_RGB = {k: np.asarray(v, dtype=np.float32) for k, v in {**vocab.COLOURS, **vocab.BACKGROUNDS}.items()}


@lru_cache(maxsize=4096)
def shape_mask(shape: str, extent: int) -> np.ndarray:
    """Filled silhouette of `shape` in an extent x extent box, sampled at pixel centres (read-only)."""
    if shape not in vocab.SHAPES:
        raise ValueError(f"unknown shape {shape!r}; allowed: {', '.join(vocab.SHAPES)}")
    if extent < 1:
        raise ValueError(f"extent must be at least 1 pixel, got {extent}")
    u = (np.arange(extent, dtype=np.float64) + 0.5) / extent  # pixel centres in (0, 1)
    x, y = np.meshgrid(u, u)  # (e, e), y grows downwards
    if shape == "circle":
        mask = (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.25
    elif shape == "square":
        mask = np.ones((extent, extent), dtype=bool)
    elif shape == "triangle":  # apex at top centre, base along the bottom
        mask = np.abs(x - 0.5) <= y / 2.0
    else:  # diamond
        mask = np.abs(x - 0.5) + np.abs(y - 0.5) <= 0.5
    mask.setflags(write=False)
    return mask


@lru_cache(maxsize=4096)
def _sprites(shape: str, extent: int, outline: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(silhouette, drawn pixels, contour); `outline` = 0 draws the shape filled."""
    silhouette = shape_mask(shape, extent)
    padded = np.pad(silhouette, 1)
    contour = silhouette & ~ndimage.binary_erosion(padded)[1:-1, 1:-1]
    if outline:
        inner = ndimage.binary_erosion(padded, iterations=outline)[1:-1, 1:-1]
        drawn = silhouette & ~inner
    else:
        drawn = silhouette
    for a in (drawn, contour):
        a.setflags(write=False)
    return silhouette, drawn, contour


def _placed(obj: Obj, scale: float, outline: int):
    """(y slice, x slice, silhouette, drawn, contour) of an object at the render scale."""
    e = max(1, round(obj.extent * scale))
    x0, y0 = round(obj.x0 * scale), round(obj.y0 * scale)
    sil, drawn, contour = _sprites(obj.shape, e, outline)
    return slice(y0, y0 + e), slice(x0, x0 + e), sil, drawn, contour


def _check_resolution(resolution: int) -> float:
    if not isinstance(resolution, (int, np.integer)) or resolution < 16:
        raise ValueError(f"resolution must be an integer of at least 16 pixels, got {resolution!r}")
    return resolution / vocab.REFERENCE_RESOLUTION


def _outline_px(fill: str, scale: float) -> int:
    return max(1, round(vocab.OUTLINE_WIDTH * scale)) if fill == "outlined" else 0


def render_rgb(scene: Scene, resolution: int = 64, objects: tuple[Obj, ...] | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
    """The RGB image (H, W, 3) float32 in [0, 1]; `objects` defaults to the scene's own layout."""
    scale = _check_resolution(resolution)
    rgb = out if out is not None else np.empty((resolution, resolution, 3), dtype=np.float32)
    rgb[...] = _COLOUR_RGB[scene.background]
    outline = _outline_px(scene.fill, scale)
    for obj in sorted(scene.objects if objects is None else objects, key=lambda o: o.depth):
        ys, xs, _, drawn, _ = _placed(obj, scale, outline)
        rgb[ys, xs][drawn] = _COLOUR_RGB[obj.colour]
    return rgb


@dataclass
class Modalities:
    rgb: np.ndarray
    depth: np.ndarray
    sketch: np.ndarray
    instances: np.ndarray
    classes: np.ndarray
    reference: np.ndarray | None

    def save_pngs(self, prefix: str | Path) -> list[Path]:
        """Write `<prefix>_<modality>.png` for every modality; returns the paths."""
        from PIL import Image

        prefix = Path(prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        images = {
            "rgb": to_uint8(self.rgb),
            "depth": to_uint8(self.depth),
            "sketch": to_uint8(self.sketch),
            "instances": self.instances.astype(np.uint8) * (255 // (vocab.MAX_OBJECTS + 1)),
            "classes": to_uint8(class_colour_map(self.classes)),
        }
        if self.reference is not None:
            images["reference"] = to_uint8(self.reference)
        paths = []
        for name, array in images.items():
            path = prefix.with_name(f"{prefix.name}_{name}.png")
            Image.fromarray(array).save(path)
            paths.append(path)
        return paths


def render(scene: Scene, resolution: int = 64, reference: bool = True) -> Modalities:
    """Every modality of `scene` at `resolution` x `resolution`."""
    scale = _check_resolution(resolution)
    h = w = resolution
    rgb = np.empty((h, w, 3), dtype=np.float32)
    rgb[...] = _COLOUR_RGB[scene.background]
    depth = np.zeros((h, w), dtype=np.float32)
    sketch = np.zeros((h, w), dtype=np.float32)
    instances = np.zeros((h, w), dtype=np.int16)
    classes = np.zeros((len(vocab.SHAPES), h, w), dtype=bool)
    outline = _outline_px(scene.fill, scale)
    order = sorted(range(len(scene.objects)), key=lambda k: scene.objects[k].depth)
    for k in order:
        obj = scene.objects[k]
        ys, xs, sil, drawn, contour = _placed(obj, scale, outline)
        rgb[ys, xs][drawn] = _COLOUR_RGB[obj.colour]
        depth[ys, xs][sil] = obj.depth
        sketch[ys, xs][contour] = 1.0
        instances[ys, xs][sil] = k + 1
        classes[vocab.SHAPES.index(obj.shape), ys, xs] |= sil
    ref = None
    if reference and scene.reference_objects:
        ref = render_rgb(scene, resolution, objects=scene.reference_objects)
    return Modalities(rgb, depth, sketch, instances, classes, ref)


def group_silhouettes(scene: Scene, resolution: int = 64, groups: int = vocab.MAX_OBJECTS) -> np.ndarray:
    """(groups, R, R) uint8: per noun phrase (group), the union of its objects' silhouettes, occluded parts
    included (what an object word should attend to; `render(...).instances` keeps only the visible parts)."""
    scale = _check_resolution(resolution)
    masks = np.zeros((groups, resolution, resolution), dtype=np.uint8)
    for obj in scene.objects:
        ys, xs, sil, _, _ = _placed(obj, scale, 0)
        masks[obj.group, ys, xs] |= sil.astype(np.uint8)
    return masks


def to_uint8(array: np.ndarray) -> np.ndarray:
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def class_colour_map(classes: np.ndarray) -> np.ndarray:
    """(K, H, W) bool -> (H, W, 3) float, one fixed colour per shape class, for looking at."""
    palette = np.asarray([(0.9, 0.2, 0.2), (0.2, 0.7, 0.2), (0.2, 0.3, 0.9), (0.9, 0.8, 0.1)], np.float32)
    out = np.zeros(classes.shape[1:] + (3,), dtype=np.float32)
    for k in range(classes.shape[0]):
        out[classes[k]] = palette[k % len(palette)]
    return out
