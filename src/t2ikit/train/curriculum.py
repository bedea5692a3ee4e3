"""Curricula: piecewise-constant schedules of image resolution and scene complexity over optimizer steps.

A curriculum is a pure function of the step, so the data stream stays a pure function of (seed, step)
and a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass

from t2ikit.world.categories import check_mix

MAX_OBJECTS = 4  # Shapes World scenes hold 1 to 4 objects


@dataclass(frozen=True)
class Schedule:
    points: tuple[tuple[int, int], ...]  # ((step, value), ...), steps strictly increasing from 0

    def at(self, step: int) -> int:
        value = self.points[0][1]
        for start, v in self.points:
            if step < start:
                break
            value = v
        return value


def parse_schedule(points: list, name: str) -> Schedule | None:
    """[[step, value], ...] from a config -> Schedule; [] -> None; anything else is a ValueError."""
    if not points:
        return None
    if not all(isinstance(p, list) and len(p) == 2 and all(type(x) is int for x in p) for p in points):
        raise ValueError(f"{name} must be a list of [step, value] integer pairs, got {points!r}")
    steps = [p[0] for p in points]
    if steps[0] != 0 or any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"{name} steps must start at 0 and strictly increase, got {steps}")
    return Schedule(tuple((int(s), int(v)) for s, v in points))


@dataclass(frozen=True)
class Curriculum:
    """What the UNet stage's data looks like at each optimizer step (picklable for DataLoader workers)."""

    resolution: Schedule | None = None  # None: the model resolution throughout
    complexity: Schedule | None = None  # None: scenes of any complexity
    default_resolution: int = 64
    mix: tuple[tuple[str, float], ...] = ()  # ((category, weight), ...) of the scenes; (): the world's TRAIN_MIX

    def resolution_at(self, step: int) -> int:
        return self.resolution.at(step) if self.resolution else self.default_resolution

    def max_objects_at(self, step: int) -> int | None:
        return self.complexity.at(step) if self.complexity else None

    def active(self) -> bool:
        """Whether the curriculum changes the data at all (else the stream is the plain training mix)."""
        return bool(self.resolution or self.complexity or self.mix)


def curriculum_from_config(cfg) -> Curriculum:
    """Curriculum of a TrainConfig; ValueError for a resolution the VAE/UNet cannot take, a bad count or a
    bad category mix."""
    from t2ikit.models.sizes import model_size, vae_size

    res = parse_schedule(cfg.curriculum.resolution, "curriculum.resolution")
    cx = parse_schedule(cfg.curriculum.complexity, "curriculum.complexity")
    if res:
        factor = vae_size(cfg.model.vae).factor
        down = 2 ** (len(model_size(cfg.model.size).block_out_channels) - 1)  # UNet downsamplings
        for _, r in res.points:
            if not 0 < r <= cfg.model.resolution or r % (factor * down):
                raise ValueError(
                    f"curriculum.resolution value {r} must be in (0, model.resolution={cfg.model.resolution}] "
                    f"and divisible by {factor * down} (VAE factor {factor} x UNet downsampling {down})"
                )
    if cx and not all(1 <= v <= MAX_OBJECTS for _, v in cx.points):
        raise ValueError(f"curriculum.complexity values must be max-object counts in 1..{MAX_OBJECTS}, got {cx.points}")
    try:
        mix = tuple(check_mix(cfg.curriculum.mix).items()) if cfg.curriculum.mix else ()
    except ValueError as err:
        raise ValueError(f"curriculum.mix: {err}") from None
    return Curriculum(res, cx, cfg.model.resolution, mix)
