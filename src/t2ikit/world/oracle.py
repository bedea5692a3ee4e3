"""The oracle: read an image back into Shapes World objects and score it against a spec.

It judges generated images, which are never clean (blurred edges, pixel noise, colour shifts, stray
blobs), so every step is a robust estimate rather than an exact read of the renderer's pixels:

1. resample to the 64-px reference canvas (box filter down, bilinear up);
2. background = per-channel median of the outermost pixel ring (the layout keeps 2 px empty there);
3. per pixel, "unmix" against the background for every palette colour c: observed - bg = a (c - bg) +
   residual. Blurred edges are such blends, and vocab.COLOURS was chosen so that no colour lies on
   another's blend line, so the colour with the least (locally smoothed) residual is the pixel's
   colour and `a` its coverage;
4. object pixels = coverage >= 1/2 (half contrast: where a blurred edge crosses the true edge);
   objects = connected components of one colour, tiny ones dropped;
5. silhouette = the component with its holes filled; shape = the template (circle, square, triangle,
   diamond) of best IoU, fitted by area and centroid; size = the fitted extent vs vocab.SIZE_THRESHOLD;
   fill = outlined when the silhouette shows an empty inside.

`score(image, spec)` turns the detections into named checks: per group present / colour / size /
count, per relation every instance pair, and the stated style.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from t2ikit.world import vocab
from t2ikit.world.render import _sprites
from t2ikit.world.spec import Spec

REF = vocab.REFERENCE_RESOLUTION  # every measure below is in px of the 64x64 reference canvas
MIN_RESOLUTION = 32

# Detection thresholds (px and px^2 at 64, coverage fractions).
COVERAGE = 0.5  # a pixel belongs to an object at half its colour's contrast with the background
RESIDUAL_SMOOTHING = 0.7  # sigma of the Gaussian that smooths per-colour residuals before the argmin
MAX_RESIDUAL = 0.35  # a pixel whose colour is this far from every palette blend is no object's
MIN_DRAWN_AREA = 14  # drawn pixels of a component; the smallest object (a 10-px triangle) draws 50
MIN_SILHOUETTE_AREA = 24
MAX_EXTENT = 40.0
WINDOW_PAD = 4  # px around a component in which its coverage moments are taken  # larger blobs are not objects (large objects are at most 22 px)
MIN_SHAPE_IOU = 0.55  # below this a blob is no shape (shape None)
# Fill: outlined when holes cover at least this share of what an outline of vocab.OUTLINE_WIDTH would
# leave empty; objects whose outline would leave under MIN_EXPECTED_HOLE of the silhouette empty (small
# triangles) look the same filled or outlined, and do not vote.
HOLE_SHARE = 0.4
MIN_EXPECTED_HOLE = 0.1
# Relations, judged on box centres by the dominant-axis rule.
RELATION_MARGIN = 2.0  # px at 64 along the relation's axis

_PALETTE_NAMES = tuple(vocab.COLOURS)
_PALETTE = np.asarray([vocab.COLOURS[c] for c in _PALETTE_NAMES], dtype=np.float32)  # (K, 3)
_BG_NAMES = tuple(vocab.BACKGROUNDS)
_BG = np.asarray([vocab.BACKGROUNDS[b] for b in _BG_NAMES], dtype=np.float32)
# Area of each template as a fraction of its box, and its centroid's height in the box.
_AREA_FRACTION = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5}
_CENTROID_Y = {"circle": 0.5, "square": 0.5, "triangle": 2.0 / 3.0, "diamond": 0.5}

# ---------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    """One object read from an image; positions in px of the 64x64 reference canvas."""

    colour: str  # one of vocab.COLOURS
    shape: str | None  # one of vocab.SHAPES, or None for a blob that fits no template
    size: str  # "small" | "large"
    extent: float  # side of the fitted shape's box
    centre: tuple[float, float]  # (x, y) centre of the fitted box: the world's position of an object
    centroid: tuple[float, float]  # (x, y) centre of mass of the silhouette
    bbox: tuple[float, float, float, float]  # (x0, y0, x1, y1) of the silhouette, x1/y1 exclusive
    fill: str | None  # "filled" | "outlined" | None (too small for an outline to leave an inside)
    area: float  # silhouette area, px^2
    shape_iou: float  # IoU of the silhouette with the fitted template


@dataclass(frozen=True)
class Reading:
    background: str  # nearest of vocab.BACKGROUNDS
    background_rgb: tuple[float, float, float]
    detections: tuple[Detection, ...]


@dataclass(frozen=True)
class Check:
    name: str  # "group 0 present", "group 0 colour", "relation 0", "background", ...
    passed: bool
    detail: str
    kind: str  # "present" | "colour" | "size" | "count" | "relation" | "background" | "fill"

    def __iter__(self):  # unpack as (name, passed, detail)
        return iter((self.name, self.passed, self.detail))


@dataclass(frozen=True)
class Score:
    checks: tuple[Check, ...]
    reading: Reading = field(repr=False)

    @property
    def all_passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def n_passed(self) -> int:
        return sum(c.passed for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


# ---------------------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------------------


def as_reference_rgb(image) -> np.ndarray:
    """Any supported image -> float32 (64, 64, 3) in [0, 1]; ValueError/TypeError naming what is wrong.

    Accepted: numpy HxWx3 uint8 or float in [0, 1]; PIL RGB; torch CHW (3, H, W) uint8 or float in
    [0, 1]. Square, at least MIN_RESOLUTION px.
    """
    if type(image).__module__.startswith("PIL"):
        if image.mode != "RGB":
            raise ValueError(f"image: PIL mode {image.mode!r} is not supported; convert it with .convert('RGB')")
        array = np.asarray(image)
    elif type(image).__module__.startswith("torch"):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image: a torch tensor must be CHW with 3 channels, got shape {tuple(image.shape)}")
        array = image.detach().cpu().permute(1, 2, 0).numpy()
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise TypeError(f"image must be a numpy array, a PIL image or a torch tensor, got {type(image).__name__}")
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image: expected an HxWx3 array, got shape {array.shape}")
    h, w = array.shape[:2]
    if h != w:
        raise ValueError(f"image: expected a square image, got {h}x{w}")
    if h < MIN_RESOLUTION:
        raise ValueError(f"image: resolution {h} is below the oracle's minimum of {MIN_RESOLUTION}")
    if array.dtype == np.uint8:
        rgb = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        rgb = np.asarray(array, dtype=np.float32)
        if not np.isfinite(rgb).all():
            raise ValueError("image: contains NaN or infinite values")
        lo, hi = float(rgb.min()), float(rgb.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise ValueError(f"image: float values must lie in [0, 1], got range [{lo:.3g}, {hi:.3g}]"
                             + (" (uint8 values stored as floats? divide by 255)" if hi > 2 else "")
                             + (" (a [-1, 1] model output? map it with (x + 1) / 2)" if lo < -0.1 else ""))
        rgb = np.clip(rgb, 0.0, 1.0)  # only rounding error beyond [0, 1] gets here
    else:
        raise ValueError(f"image: dtype {array.dtype} is not supported; use uint8 or float in [0, 1]")
    if h != REF:
        rgb = _resample(rgb, REF)
    return rgb


def _resample(rgb: np.ndarray, size: int) -> np.ndarray:
    h = rgb.shape[0]
    if h % size == 0:  # exact box filter
        f = h // size
        return rgb.reshape(size, f, size, f, 3).mean(axis=(1, 3))
    from PIL import Image

    method = Image.BOX if h > size else Image.BILINEAR
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., c]), mode="F")
                                .resize((size, size), method)) for c in range(3)], axis=-1)


# ---------------------------------------------------------------------------------------------------
# Reading an image
# ---------------------------------------------------------------------------------------------------


def _template(shape: str, x0: float, y0: float, e: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The shape's box (x0, y0, e) sampled at pixel centres xs, ys (as render.shape_mask does)."""
    u = (xs + 0.5 - x0) / e
    v = (ys + 0.5 - y0) / e
    inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    if shape == "circle":
        m = (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    elif shape == "square":
        m = inside
    elif shape == "triangle":
        m = np.abs(u - 0.5) <= v / 2.0
    else:
        m = np.abs(u - 0.5) + np.abs(v - 0.5) <= 0.5
    return m & inside


def _moments(cov: np.ndarray, oy: int, ox: int):
    """Mass, centre of mass (x, y) and the blur-invariant shape features of a coverage map.

    The complex central moments c_p0 = sum cov (z - z_c)^p, z = x + iy, of an image convolved with an
    isotropic kernel equal the image's own (every c_k0 of the kernel is 0), so Re c20, Im c30 and Re c40
    over mass^(p/2+1) read a blurred shape as well as a sharp one: they tell elongation (triangle),
    a pointing apex (triangle) and vertices on the axes (diamond, c40 > 0) or diagonals (square, < 0).
    """
    ys, xs = np.mgrid[0:cov.shape[0], 0:cov.shape[1]]
    mass = float(cov.sum())
    cx, cy = float((cov * xs).sum()) / mass, float((cov * ys).sum()) / mass
    z = (xs - cx) + 1j * (ys - cy)
    z2 = z * z
    features = np.asarray([
        (cov * z2).sum().real / mass ** 2,
        (cov * z2 * z).sum().imag / mass ** 2.5,
        (cov * z2 * z2).sum().real / mass ** 3,
    ])
    return mass, (cx + 0.5 + ox, cy + 0.5 + oy), features


# Each template's features (from _moments on a 400-px render; circle is all zeros) and the spread the
# distance divides by (about a quarter of the gap between the closest two shapes).
_SHAPE_FEATURES = {
    "circle": np.asarray([0.0, 0.0, 0.0]),
    "square": np.asarray([0.0, 0.0, -0.0167]),
    "triangle": np.asarray([-0.0278, 0.0681, 0.0019]),
    "diamond": np.asarray([0.0, 0.0, 0.0167]),
}


def _fit_shape(cov: np.ndarray, sil: np.ndarray, oy: int, ox: int):
    """Shape of best feature match, its IoU with the silhouette, extent and box centre (x, y)."""
    mass, (cx, cy), features = _moments(cov, oy, ox)
    shape = min(vocab.SHAPES, key=lambda s: float(((features - _SHAPE_FEATURES[s]) ** 2).sum()))
    e = float(np.sqrt(max(mass, 1.0) / _AREA_FRACTION[shape]))
    x0, y0 = cx - e / 2.0, cy - _CENTROID_Y[shape] * e  # box corner, image coordinates
    ys, xs = np.mgrid[0:sil.shape[0], 0:sil.shape[1]].astype(np.float32)
    t = _template(shape, x0 - ox, y0 - oy, e, xs, ys)
    inter = float((t & sil).sum())
    iou = inter / max(1.0, float(t.sum()) + float(sil.sum()) - inter)
    return shape, iou, e, (x0 + e / 2.0, y0 + e / 2.0)


def _expected_hole(shape: str, extent: float) -> float:
    """Share of the silhouette an outline of vocab.OUTLINE_WIDTH leaves empty at this extent."""
    e = int(round(min(max(extent, 4.0), MAX_EXTENT)))
    sil, drawn, _ = _sprites(shape, e, vocab.OUTLINE_WIDTH)
    return float((sil & ~drawn).sum()) / float(sil.sum())


def detect(image) -> Reading:
    """The background and the objects in `image` (see the module docstring for the method)."""
    rgb = as_reference_rgb(image)  # (64, 64, 3)
    border = np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]])  # (252, 3)
    bg = np.median(border, axis=0)
    background = _BG_NAMES[int(np.argmin(((_BG - bg) ** 2).sum(axis=1)))]

    d = rgb - bg  # (H, W, 3)
    v = _PALETTE - bg  # (K, 3) blend directions
    vv = (v ** 2).sum(axis=1)[:, None, None]  # (K, 1, 1)
    dv = np.einsum("hwc,kc->khw", d, v)  # (K, H, W)
    a_raw = dv / vv  # coverage along each colour's blend line
    a = np.clip(a_raw, 0.0, 1.0)
    # |d - a v| without building (K, H, W, 3): |d|^2 - 2 a d.v + a^2 |v|^2
    residual = np.sqrt(np.maximum((d ** 2).sum(axis=-1)[None] - 2.0 * a * dv + a * a * vv, 0.0))  # (K, H, W)
    smoothed = ndimage.gaussian_filter(residual, (0, RESIDUAL_SMOOTHING, RESIDUAL_SMOOTHING), mode="nearest")
    label = np.argmin(smoothed, axis=0)  # (H, W) palette index per pixel
    coverage = np.take_along_axis(a, label[None], axis=0)[0]
    own_residual = np.take_along_axis(residual, label[None], axis=0)[0]
    drawn_any = (coverage >= COVERAGE) & (own_residual <= MAX_RESIDUAL)

    detections = []
    for k, colour in enumerate(_PALETTE_NAMES):
        mask = drawn_any & (label == k)
        if mask.sum() < MIN_DRAWN_AREA:
            continue
        components, n = ndimage.label(mask)
        for index, sl in enumerate(ndimage.find_objects(components)):
            if (components[sl] == index + 1).sum() < MIN_DRAWN_AREA:
                continue
            # a window around the component, padded so that its blurred edge and the template fit in
            y0, y1 = max(0, sl[0].start - WINDOW_PAD), min(REF, sl[0].stop + WINDOW_PAD)
            x0, x1 = max(0, sl[1].start - WINDOW_PAD), min(REF, sl[1].stop + WINDOW_PAD)
            win = (slice(y0, y1), slice(x0, x1))
            det = _describe(colour, components[win] == index + 1, drawn_any[win], a_raw[k][win], y0, x0)
            if det is not None:
                detections.append(det)
    detections.sort(key=lambda t: (t.centre[1], t.centre[0]))
    return Reading(background, tuple(float(x) for x in bg), tuple(detections))


def _describe(colour: str, drawn: np.ndarray, drawn_any: np.ndarray, coverage: np.ndarray,
              oy: int, ox: int) -> Detection | None:
    """One component (crops of its window at offset oy, ox) -> Detection, or None if it is no object."""
    sil = ndimage.binary_fill_holes(drawn)
    area = float(sil.sum())
    ys, xs = np.nonzero(sil)
    if area < MIN_SILHOUETTE_AREA or max(np.ptp(ys), np.ptp(xs)) + 1 > MAX_EXTENT:
        return None
    # Coverage of this object only: its blurred edge (2 px around the silhouette) but no other object,
    # and a full inside (an outline's hole is part of the shape).
    near = ndimage.binary_dilation(sil, iterations=2) & ~(drawn_any & ~sil)
    cov = np.where(near, coverage, 0.0)
    cov[ndimage.binary_erosion(sil)] = 1.0
    shape, iou, extent, centre = _fit_shape(cov, sil, oy, ox)
    if iou < MIN_SHAPE_IOU:
        shape = None
    fill = None
    if shape is not None:
        expected = _expected_hole(shape, extent)
        if expected >= MIN_EXPECTED_HOLE:
            holes = float((sil & ~drawn_any).sum()) / area  # any colour counts as drawn inside
            fill = "outlined" if holes >= HOLE_SHARE * expected else "filled"
    return Detection(
        colour=colour,
        shape=shape,
        size="large" if extent >= vocab.SIZE_THRESHOLD else "small",
        extent=round(extent, 2),
        centre=(round(centre[0], 2), round(centre[1], 2)),
        centroid=(round(float(xs.mean()) + 0.5 + ox, 2), round(float(ys.mean()) + 0.5 + oy, 2)),
        bbox=(float(ox + xs.min()), float(oy + ys.min()), float(ox + xs.max() + 1), float(oy + ys.max() + 1)),
        fill=fill,
        area=area,
        shape_iou=round(iou, 3),
    )


# ---------------------------------------------------------------------------------------------------
# Scoring against a spec
# ---------------------------------------------------------------------------------------------------


def relation_holds(subject: tuple[float, float], relation: str, obj: tuple[float, float],
                   margin: float = RELATION_MARGIN) -> bool:
    """Dominant-axis rule on centres: the offset along the relation's axis is positive, at least
    `margin`, and larger than the offset across it."""
    (sx, sy), (ox, oy) = subject, obj
    along, across = {
        "left of": (ox - sx, oy - sy), "right of": (sx - ox, oy - sy),
        "above": (oy - sy, ox - sx), "below": (sy - oy, ox - sx),
    }[relation]
    return along >= margin and along > abs(across)


def _describe_det(t: Detection) -> str:
    return f"{t.size} {t.colour} {t.shape or 'blob'} at ({t.centre[0]:.0f}, {t.centre[1]:.0f})"


def score(image, spec: Spec) -> Score:
    """Check `image` against every statement of `spec`; see Score.checks."""
    if not isinstance(spec, Spec):
        raise TypeError(f"spec must be a t2ikit.world.spec.Spec, got {type(spec).__name__}")
    spec.validate()
    reading = image if isinstance(image, Reading) else detect(image)
    return Score(tuple(score_reading(reading, spec)), reading)


def score_reading(reading: Reading, spec: Spec) -> list[Check]:
    dets = reading.detections
    seen = "; ".join(_describe_det(t) for t in dets) or "no objects"
    checks: list[Check] = []
    members: list[list[Detection]] = []
    for i, g in enumerate(spec.groups):
        noun = f"{g.size + ' ' if g.size else ''}{g.colour} {g.shape}"
        shaped = [t for t in dets if t.shape == g.shape]
        coloured = [t for t in shaped if t.colour == g.colour]
        sized = [t for t in coloured if g.size is None or t.size == g.size]
        members.append(sized)
        checks.append(Check(f"group {i} present", bool(shaped), f"{g.shape}: {len(shaped)} found", "present"))
        checks.append(Check(f"group {i} colour", bool(coloured),
                            f"{g.colour} {g.shape}: {len(coloured)} found; seen {seen}", "colour"))
        if g.size is not None:
            checks.append(Check(f"group {i} size", bool(sized), f"{noun}: {len(sized)} found; seen {seen}", "size"))
        if g.count > 1:
            checks.append(Check(f"group {i} count", len(sized) == g.count,
                                f"{noun}: {len(sized)} found, {g.count} stated", "count"))
    for j, r in enumerate(spec.relations):
        subjects, objects = members[r.subject], members[r.object]
        bad = [(s, o) for s in subjects for o in objects if not relation_holds(s.centre, r.relation, o.centre)]
        passed = bool(subjects) and bool(objects) and not bad
        if not subjects or not objects:
            detail = f"group {r.subject if not subjects else r.object} not found"
        elif bad:
            s, o = bad[0]
            detail = f"{_describe_det(s)} is not {r.relation} {_describe_det(o)}"
        else:
            detail = f"{len(subjects) * len(objects)} pair(s) hold"
        checks.append(Check(f"relation {j} ({r.subject} {r.relation} {r.object})", passed, detail, "relation"))
    if spec.style.background is not None:
        checks.append(Check("background", reading.background == spec.style.background,
                            f"{reading.background} seen, {spec.style.background} stated", "background"))
    if spec.style.fill is not None:
        votes = [t.fill for t in dets if t.fill is not None]
        if not any(t.shape is not None for t in dets):
            checks.append(Check("fill", False, "no object seen to judge the fill of", "fill"))
        elif not votes:  # e.g. only small triangles, which an outline leaves no inside: both read true
            checks.append(Check("fill", True, "undecidable: no object large enough to show its inside", "fill"))
        else:
            outlined = sum(f == "outlined" for f in votes)
            seen_fill = "outlined" if 2 * outlined >= len(votes) else "filled"
            checks.append(Check("fill", seen_fill == spec.style.fill,
                                f"{seen_fill} seen ({outlined}/{len(votes)} outlined), {spec.style.fill} stated",
                                "fill"))
    return checks
