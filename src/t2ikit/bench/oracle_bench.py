"""How far the oracle can be trusted: its check accuracy on rendered scenes, clean and degraded.

For every category, `n` scenes are rendered and scored against their own spec under each condition:
- clean: the exact render;
- noise: + Gaussian pixel noise (sigma NOISE_SIGMA), clipped to [0, 1];
- blur: Gaussian blur (sigma BLUR_SIGMA px at 64);
- random: uniform random pixels (a check that passes here is a false positive);
- wrong: the render of the next scene of the same category scored against this one's spec.
The figures: share of checks judged right (for random and wrong: share of checks passed) and share of
images with every check passed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from t2ikit.bench.progress import Timer, bar, summary
from t2ikit.world.categories import CATEGORIES
from t2ikit.world.oracle import score
from t2ikit.world.render import render_rgb
from t2ikit.world.scene import sample_scene

ORACLE_SEED = 20240601  # world seed of the scenes the oracle is measured on
NOISE_SIGMA = 0.05
BLUR_SIGMA = 1.0
CONDITIONS = ("clean", "noise", "blur", "random", "wrong")


def degrade(rgb: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    """One of CONDITIONS (except "wrong") applied to a float (H, W, 3) render."""
    if condition == "clean":
        return rgb
    if condition == "noise":
        return np.clip(rgb + rng.normal(0.0, NOISE_SIGMA, rgb.shape), 0.0, 1.0).astype(np.float32)
    if condition == "blur":
        scale = rgb.shape[0] / 64.0
        return ndimage.gaussian_filter(rgb, (BLUR_SIGMA * scale, BLUR_SIGMA * scale, 0), mode="nearest")
    if condition == "random":
        return rng.random(rgb.shape, dtype=np.float32)
    raise ValueError(f"unknown condition {condition!r}; allowed: {', '.join(CONDITIONS)}")


@dataclass
class Tally:
    checks: int = 0
    passed: int = 0
    images: int = 0
    images_passed: int = 0

    def add(self, s) -> None:
        self.checks += len(s.checks)
        self.passed += s.n_passed
        self.images += 1
        self.images_passed += s.all_passed

    def as_dict(self) -> dict:
        return {"checks": self.checks, "check_pass_rate": self.passed / max(1, self.checks),
                "images": self.images, "image_pass_rate": self.images_passed / max(1, self.images)}


def oracle_accuracy(n: int = 2000, categories=CATEGORIES, conditions=CONDITIONS, resolution: int = 64,
                    seed: int = ORACLE_SEED, split: str = "train", progress: bool = False) -> dict:
    """{"per_category": {cat: {cond: tally}}, "overall": {cond: tally}, "per_check": {cond: {kind: rate}},
    "ms_per_image": float, "failures": [a few failing examples]}."""
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; allowed: {', '.join(CONDITIONS)}")
    per_category: dict = {}
    overall = {c: Tally() for c in conditions}
    per_check: dict = {c: {} for c in conditions}
    failures: list[dict] = []
    elapsed, scored = 0.0, 0
    timer, scenes_bar = Timer(), bar(total=n * len(categories), desc="oracle", enabled=progress, unit="scene")
    for category in categories:
        tallies = {c: Tally() for c in conditions}
        rng = np.random.default_rng([seed, CATEGORIES.index(category)])
        scenes = [sample_scene(seed, i, category=category, split=split, reference=False) for i in range(n + 1)]
        for i in range(n):
            scene = scenes[i]
            rgb = render_rgb(scene, resolution)
            for condition in conditions:
                if condition == "wrong":
                    image = render_rgb(scenes[i + 1], resolution)
                else:
                    image = degrade(rgb, condition, rng)
                t0 = time.perf_counter()
                s = score(image, scene.spec)
                elapsed += time.perf_counter() - t0
                scored += 1
                tallies[condition].add(s)
                overall[condition].add(s)
                for check in s.checks:
                    hit = per_check[condition].setdefault(check.kind, [0, 0])
                    hit[0] += check.passed
                    hit[1] += 1
                if condition in ("clean", "noise", "blur") and not s.all_passed and len(failures) < 20:
                    failures.append({"category": category, "index": i, "condition": condition,
                                     "failed": [f"{c.name}: {c.detail}" for c in s.failures()]})
            scenes_bar.update()
        per_category[category] = {c: t.as_dict() for c, t in tallies.items()}
    scenes_bar.close()
    clean = overall.get("clean")
    summary(f"oracle: {scored} images scored in {timer}"
            + (f"; clean images passed {100 * clean.images_passed / max(1, clean.images):.1f}%" if clean else ""),
            progress)
    return {
        "n_per_category": n, "resolution": resolution, "seed": seed, "split": split,
        "noise_sigma": NOISE_SIGMA, "blur_sigma": BLUR_SIGMA,
        "per_category": per_category,
        "overall": {c: t.as_dict() for c, t in overall.items()},
        "per_check": {c: {k: v[0] / v[1] for k, v in kinds.items()} for c, kinds in per_check.items()},
        "ms_per_image": 1000.0 * elapsed / max(1, scored),
        "failures": failures,
    }


def markdown(result: dict) -> str:
    """The figures as Markdown tables: check pass rate (image pass rate) per category and condition."""
    conditions = list(result["overall"])
    lines = ["| category | " + " | ".join(conditions) + " |", "|---" * (len(conditions) + 1) + "|"]
    rows = list(result["per_category"].items()) + [("**all**", result["overall"])]
    for name, per_cond in rows:
        cells = [f"{100 * per_cond[c]['check_pass_rate']:.2f}% ({100 * per_cond[c]['image_pass_rate']:.1f}%)"
                 for c in conditions]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    kinds = sorted({k for v in result["per_check"].values() for k in v})
    lines += ["", "| check | " + " | ".join(conditions) + " |", "|---" * (len(conditions) + 1) + "|"]
    for kind in kinds:
        cells = [f"{100 * result['per_check'][c][kind]:.2f}%" if kind in result["per_check"][c] else "-"
                 for c in conditions]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
