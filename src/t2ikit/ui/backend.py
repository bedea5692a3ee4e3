"""What the web UI does, without the web: one object that holds the loaded model and turns a tab's inputs
into the library's calls (`T2IPipeline.make_spec/run`, `t2ikit.edit.edit`, `analysis.attribution.explain`,
`bench.compbench.run`), writing results only into its output folder.

Every method raises ValueError with a sentence for bad input, before any compute; the app (ui/app.py) shows
it in the page. Nothing here reads a path the browser typed: images arrive as uploads (files the web server
wrote into the output folder's upload cache) or as PIL images, and models are chosen from `known_models()`.
One model call runs at a time (`self.lock`); the web queue holds the others.
"""

from __future__ import annotations

import secrets
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # an uploaded image file may be at most this large (also the server's limit)
MAX_UPLOAD_PIXELS = 2048 * 2048  # ... and hold at most this many pixels (checked from its header, nothing decoded)
MAX_BATCH = 16  # images per Generate press
RANDOM_SEED = -1  # the seed box's "pick one for me", as in AUTOMATIC1111
REGION_COLUMNS = ("x0", "y0", "x1", "y1", "phrase")


class Cancelled(Exception):
    """The user pressed Cancel while the model was sampling."""


# ----------------------------------------------------------------------------------------------------
# Uploads


def read_upload(path, what: str = "image"):
    """The uploaded file at `path` (written by the web server) as an RGB PIL image; ValueError, naming the limit,
    if it is too large in bytes or pixels or is not an image. The header is read before anything is decoded."""
    from PIL import Image, UnidentifiedImageError

    from t2ikit.cli.paths import input_image_size

    p = Path(path)
    size = p.stat().st_size if p.is_file() else 0
    if size > MAX_UPLOAD_BYTES:
        raise ValueError(f"the {what} upload is {size / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES / 2**20:.0f} MiB")
    try:
        h, w = input_image_size(p)
    except ValueError:
        raise ValueError(f"the {what} upload ({p.name}) is not an image PIL can read") from None
    if h * w > MAX_UPLOAD_PIXELS:
        raise ValueError(f"the {what} upload is {w}x{h} px; the limit is {MAX_UPLOAD_PIXELS} pixels "
                         f"(e.g. {int(MAX_UPLOAD_PIXELS ** 0.5)}x{int(MAX_UPLOAD_PIXELS ** 0.5)})")
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("RGB"), dict(im.info)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"the {what} upload ({p.name}) could not be decoded: {err}") from None


# ----------------------------------------------------------------------------------------------------
# Requests


@dataclass
class GenerateRequest:
    """The Generate tab's fields; None means the model's default."""

    prompt: str
    negative: str = ""
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = RANDOM_SEED  # -1: a random seed, reported back
    width: int | None = None
    height: int | None = None
    count: int = 1  # images of this press, seeded seed, seed + 1, ...
    weighting: str = "a1111"
    regions: list = field(default_factory=list)  # rows [x0, y0, x1, y1, phrase] (pixels)
    region_mode: str = "attention"  # or "noise"; "boxes": each row places a phrase of the prompt (boxes=)
    condition: str | None = None  # sketch, depth, mask or reference
    condition_image: object = None  # PIL image
    condition_scale: float = 1.0
    attention: str | None = None  # sparse / hierarchical variant, e.g. "topk:4"
    relation_guidance: float | None = None
    layout: str | None = None  # planned boxes: "auto", "many", "many+relations", "none"; None: the model's
    region_layout: bool = False  # a region per object phrase, in the planned boxes (region_layout="auto")
    fast: bool = False  # the pipeline's FAST_SETTINGS for what the request leaves to the model (docs/FAST.md)
    latent_layers: str | None = None  # "encoder": relation guidance reads the encoder's maps (a cheaper pass)
    latent_pass: str | None = None  # "shared": one latent-guidance pass (relation, boxes) also gives the prediction
    compile: bool = False  # denoise through torch.compile's UNet (the first press pays the compilation)
    guidance_interval: tuple | None = None  # (start, end): CFG on that fraction of the steps only; None = all
    guidance_rescale: float | None = None  # phi in [0, 1] (diffusion.guidance.rescale); None: the model's


def region_strings(rows) -> list[str]:
    """Table rows [x0, y0, x1, y1, phrase] -> "x0,y0,x1,y1:phrase" strings (blank rows skipped); ValueError
    naming the row for a partly filled one."""
    out = []
    for k, row in enumerate(rows or [], start=1):
        cells = ["" if c is None else str(c).strip() for c in list(row)[:5]]
        cells += [""] * (5 - len(cells))
        if not any(cells):
            continue
        if not all(cells):
            raise ValueError(f"region row {k} needs x0, y0, x1, y1 (pixels) and a phrase; got {cells}")
        try:
            box = [int(float(c)) for c in cells[:4]]
        except ValueError:
            raise ValueError(f"region row {k}: x0, y0, x1, y1 must be numbers of pixels; got {cells[:4]}") from None
        out.append(f"{box[0]},{box[1]},{box[2]},{box[3]}:{cells[4]}")
    return out


def draw_regions(size: tuple[int, int], rows, background=None):
    """A preview of the regions' boxes (labelled with their phrase) on a canvas of `size` (height, width),
    over `background` (a PIL image) if given, scaled up so that small model sizes stay readable."""
    from PIL import Image, ImageDraw

    h, w = size
    scale = max(1, 256 // max(h, w))
    canvas = (background.convert("RGB").resize((w, h)) if background is not None
              else Image.new("RGB", (w, h), "white")).resize((w * scale, h * scale), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    colours = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4"]
    for k, text in enumerate(region_strings(rows)):
        box, phrase = text.split(":", 1)
        x0, y0, x1, y1 = (int(v) * scale for v in box.split(","))
        colour = colours[k % len(colours)]
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=2)
        draw.text((x0 + 3, y0 + 2), f"{k + 1}: {phrase}", fill=colour)
    return canvas


# ----------------------------------------------------------------------------------------------------
# The backend


class Backend:
    """The loaded model, the output folder and the calls of each tab."""

    def __init__(self, model: str | None = None, outdir: str | Path = "outputs", threads: int | None = None,
                 device: str = "cpu"):
        from t2ikit.cli.models import load_pipeline

        self.outdir = Path(outdir).resolve()
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.device, self.threads = device, threads
        self.lock = threading.Lock()  # one model call at a time: hooks are installed on the shared UNet
        self.cancels: dict[str, threading.Event] = {}  # session -> its Cancel button's flag
        self.model_arg = model
        self.pipe = load_pipeline(model, threads, device)

    # --- models ---------------------------------------------------------------------------------------

    def model_choices(self) -> list[str]:
        """Names of the models the registry knows (and the one the server started with)."""
        from t2ikit.models.registry import known_models

        names = [e.name for e in known_models()]
        if self.pipe.name not in names:
            names.insert(0, self.pipe.name)
        return names

    def switch_model(self, name: str) -> str:
        """Load the known model `name` (never a typed path); a sentence saying what is loaded."""
        from t2ikit.cli.models import load_pipeline
        from t2ikit.models.registry import known_models

        if name == self.pipe.name:
            return f"model {name} is loaded ({self.pipe.path})"
        entries = {e.name: e for e in known_models()}
        if name not in entries:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(self.model_choices())}")
        entry = entries[name]
        if entry.kind == "missing":
            raise ValueError(f"model {name}'s folder {entry.path} is missing or incomplete; see `t2ikit models`")
        with self.lock:
            self.pipe = load_pipeline(str(entry.path), self.threads, self.device)
        return f"model {name} is loaded ({self.pipe.path})"

    def defaults(self) -> dict:
        """The loaded model's defaults as the Generate tab shows them."""
        h, w = self.pipe.default_size
        return {**self.pipe.defaults, "width": w, "height": h}

    # --- Generate -------------------------------------------------------------------------------------

    def parse_readout(self, prompt: str, weighting: str = "a1111") -> str:
        """Markdown: the prompt's weighted words and what the model's parser reads (objects, relations);
        a syntax error shows its caret message."""
        from t2ikit.text.parser import PromptParseError
        from t2ikit.text.weighting import check_weighting, plain_text

        if not prompt.strip():
            return "*(empty prompt: an unconditional image)*"
        try:
            parsed = check_weighting([prompt], weighting)[0]
        except ValueError as err:
            return f"**syntax error**\n```\n{err}\n```"
        lines = []
        for part in getattr(parsed, "parts", ()):
            words = []
            for start, end in _word_spans(part.text):
                weight = part.weights[start] if start < len(part.weights) else 1.0
                words.append(part.text[start:end] if abs(weight - 1) < 1e-6 else f"**{part.text[start:end]}** ×{weight:.2f}")
            lines.append("weights: " + " ".join(words))
        parser = self.pipe.parser
        if parser is None:
            lines.append("objects: this model names no prompt parser")
            return "\n\n".join(lines)
        text = plain_text(prompt, weighting)
        try:
            structure = parser.parse(text)
        except PromptParseError as err:
            lines.append(f"the {parser.name} parser cannot read it: {err}")
            return "\n\n".join(lines)
        groups = {}
        for o in structure.objects:
            groups.setdefault(o.group, text[o.start:o.end])
        lines.append("objects: " + ("; ".join(f"[{g}] {p}" for g, p in sorted(groups.items())) or "none"))
        rel = [f"{groups[r.subject]} **{r.relation}** {groups[r.object]}" for r in structure.relations]
        lines.append("relations: " + ("; ".join(rel) or "none"))
        return "\n\n".join(lines)

    def make_spec(self, req: GenerateRequest):
        """The validated GenerationSpec of a request, its seed drawn if -1 (ValueError for bad input)."""
        from t2ikit.diffusion.samplers import check_sampler

        if not isinstance(req.count, int) or not 1 <= req.count <= MAX_BATCH:
            raise ValueError(f"batch count must be 1..{MAX_BATCH}; got {req.count!r}")
        if req.sampler is not None:
            check_sampler(req.sampler)
        seed = req.seed
        if seed is None or seed == RANDOM_SEED:
            seed = secrets.randbelow(2**32)
        elif not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be -1 (random) or an int >= 0; got {seed!r}")
        size = None
        if req.width or req.height:
            default_h, default_w = self.pipe.default_size
            size = (int(req.height or default_h), int(req.width or default_w))
        conditions, scales = {}, {}
        if req.condition:
            if req.condition_image is None:
                raise ValueError(f"condition {req.condition!r} chosen without an image: upload one or draw a sketch")
            conditions[req.condition] = req.condition_image
            scales[req.condition] = float(req.condition_scale)
        regions, boxes, mode = region_strings(req.regions), [], req.region_mode
        if mode == "boxes":  # the rows place phrases of the prompt instead of adding region prompts
            regions, boxes, mode = [], regions, "attention"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            spec = self.pipe.make_spec(req.prompt, req.negative or None, req.steps, req.guidance, seed, req.count,
                                       size, req.sampler, req.relation_guidance, weighting=req.weighting,
                                       attention=req.attention or None, regions=regions, region_mode=mode,
                                       conditions=conditions, scales=scales, boxes=boxes,
                                       layout=req.layout or None,
                                       region_layout="auto" if req.region_layout else None,
                                       fast=bool(req.fast), latent_layers=req.latent_layers or None,
                                       latent_pass=req.latent_pass or None,
                                       compile=bool(req.compile), guidance_interval=req.guidance_interval,
                                       guidance_rescale=req.guidance_rescale)
        return spec, [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]

    def generate(self, req: GenerateRequest, progress=None, cancel: threading.Event | None = None) -> dict:
        """Images of a request, saved as PNGs with their parameters in the output folder.

        progress(done, total) after each step; `cancel` set stops the sampling (Cancelled).
        Returns {"files", "parameters" (one A1111 text per image), "seeds", "warnings"}.
        """
        from t2ikit.cli.info import format_parameters

        spec, notes = self.make_spec(req)

        def step(i, t, latents):
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            if progress is not None:
                progress(i + 1, spec.steps)

        with self.lock:
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = self.pipe.run(spec, progress=False, callback=step)
            notes += [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]
            files, texts = [], []
            for image, seed in zip(result.pil(), result.seeds):
                settings = {**spec.settings(), "Seed": seed, "Model": self.pipe.name, **self.pipe.weights_settings()}
                text = format_parameters(spec.prompts[0], req.negative or None, settings)
                files.append(self._save(image, text, f"{seed}"))
                texts.append(text)
        return {"files": files, "parameters": texts, "seeds": list(result.seeds), "warnings": list(dict.fromkeys(notes))}

    def _save(self, image, text: str, tag: str) -> str:
        from PIL.PngImagePlugin import PngInfo

        from t2ikit.cli.info import PNG_KEY

        from t2ikit.cli.paths import next_number

        info = PngInfo()
        info.add_text(PNG_KEY, text)
        path = self.outdir / f"{next_number(self.outdir):05d}-{tag}.png"  # as `t2ikit generate` numbers them
        image.save(path, pnginfo=info)
        return str(path)

    # --- PNG info -------------------------------------------------------------------------------------

    def png_info(self, upload) -> dict:
        """{"text", "prompt", "negative_prompt", "settings", "image"} of an uploaded PNG (t2ikit's or
        AUTOMATIC1111's "parameters" chunk)."""
        from t2ikit.cli.info import PNG_KEY, parse_parameters

        image, info = read_upload(upload, "PNG")
        text = info.get(PNG_KEY)
        if not isinstance(text, str):
            raise ValueError(f"this image carries no generation parameters (no {PNG_KEY!r} text chunk)")
        return {**parse_parameters(text), "text": text, "image": image}

    # --- Edit -----------------------------------------------------------------------------------------

    def edit(self, image, source: str, target: str, instruction: str, method: str, mask: str, steps: int,
             guidance: float, progress=None) -> dict:
        """Edit a PIL `image` (uploaded or sent from Generate) by source/target prompts or an instruction.
        Returns {"file", "parameters", "mask" (PIL or None), "source", "target", "warnings"}."""
        from t2ikit.cli.edit import _check_memory
        from t2ikit.cli.info import format_parameters
        from t2ikit.edit import EditOptions, edit

        if image is None:
            raise ValueError("upload an image to edit, or send one from Generate")
        instruction = (instruction or "").strip() or None
        source, target = (source or "").strip() or None, (target or "").strip() or None
        if instruction is None and (source is None or target is None):
            raise ValueError("give a source and a target prompt, or an instruction")
        if instruction is not None and target is not None:
            raise ValueError("give a target prompt or an instruction, not both")
        options = EditOptions(method=method, mask=None if mask in (None, "", "none") else mask, steps=int(steps),
                              guidance=float(guidance)).check()
        with self.lock:
            _check_memory(self.pipe, options, (image.height, image.width))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = edit(self.pipe, image, source, target, instruction=instruction, options=options)
            settings = {**options.settings(), "Edit source": result.source_prompts[0], "Model": self.pipe.name,
                        **self.pipe.weights_settings()}
            if instruction is not None:
                settings["Edit instruction"] = instruction
            text = format_parameters(result.target_prompts[0], None, settings)
            file = self._save(result.pil()[0], text, "edit")
        mask_image = None
        if result.mask is not None:
            from PIL import Image

            mask_image = Image.fromarray((result.mask[0, 0].numpy() * 255).astype("uint8"))
        return {"file": file, "parameters": text, "mask": mask_image, "source": result.source_prompts[0],
                "target": result.target_prompts[0],
                "warnings": [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]}

    # --- Explain --------------------------------------------------------------------------------------

    def layer_choices(self) -> list[str]:
        """The UNet's cross-attention layers, by block ("down_blocks.0", "mid_block", "up_blocks.1", ...)."""
        blocks = []
        for name, module in self.pipe.unet.named_modules():
            if name.endswith("attn2"):
                parts = name.split(".")
                block = parts[0] if parts[0] == "mid_block" else ".".join(parts[:2])
                blocks.append(block)
        return list(dict.fromkeys(blocks))

    def explain(self, prompt: str, seed: int, steps: int | None, guidance: float | None, step_range=(0, 1.0),
                layers=None, weighting: str = "a1111") -> dict:
        """Per-word and per-phrase attention maps of `prompt`, averaged over the sampling steps in `step_range`
        (fractions of the steps, [from, to]) and the chosen cross-attention blocks `layers` (None: all).
        Returns {"image" (PIL), "maps": [(PIL overlay, label)], "sheet" (PIL)}."""
        from t2ikit.analysis.attribution import explain, overlay_tiles
        from t2ikit.models.memory import check_memory

        if seed is None or seed < 0:
            raise ValueError(f"seed must be an int >= 0 to explain an image; got {seed!r}")
        lo, hi = step_range
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"the step range must be fractions 0 <= from < to <= 1; got {lo}, {hi}")
        unknown = [l for l in (layers or []) if l not in self.layer_choices()]
        if unknown:
            raise ValueError(f"unknown layer(s) {unknown}; this model's: {', '.join(self.layer_choices())}")
        n = steps if steps is not None else self.pipe.defaults["steps"]
        kept = [i for i in range(n) if lo * n <= i < max(hi * n, lo * n + 1)]
        with self.lock:
            check_memory(self.pipe, 1, self.pipe.default_size, rows_per_image=2, attention_maps=True, what="explain")
            attr = explain(self.pipe, prompt, seed=int(seed), steps=steps, guidance=guidance, mode=weighting,
                           layers=list(layers) if layers else None, step_indices=kept, parser=self.pipe.parser)
        tiles = overlay_tiles(attr)
        return {"image": tiles[0][1], "maps": [(im, label) for label, im in tiles[1:]], "steps": kept}

    # --- Bench ----------------------------------------------------------------------------------------

    def bench(self, categories: list[str], n_prompts: int, seeds: int, steps: int, progress=None) -> dict:
        """A small CompBench run on the loaded model: {"markdown", "rows" (per category), "failures":
        [(PIL image, caption with the oracle's reasons)]}."""
        from t2ikit.bench import compbench as cb

        if not 1 <= n_prompts <= 20 or not 1 <= seeds <= 4:
            raise ValueError(f"the UI runs small subsets: 1..20 prompts per category and 1..4 seeds; got "
                             f"{n_prompts} and {seeds}")
        from t2ikit.world.oracle import MIN_RESOLUTION

        if min(self.pipe.default_size) < MIN_RESOLUTION:
            raise ValueError(f"CompBench's oracle reads images of at least {MIN_RESOLUTION} px; {self.pipe.name} makes "
                             f"{self.pipe.default_size[1]}x{self.pipe.default_size[0]}")
        suite = cb.make_suite("train", n_prompts, seeds, tuple(categories or ()))
        images = {}
        generate = cb.pipeline_generator(self.pipe, steps=steps)
        done = [0]

        def generator(prompts, seeds_):
            out = generate(prompts, seeds_)
            for p, s, im in zip(prompts, seeds_, out):
                images[(p, s)] = im
            done[0] += len(prompts)
            if progress is not None:
                progress(done[0], len(suite.items))
            return out

        with self.lock:
            result = cb.run(suite, generator, batch_size=4, generator_name=f"pipeline:{self.pipe.name}")
        rows = [[cat, v["n"], round(100 * v["accuracy"], 1), f"[{100 * v['ci95'][0]:.1f}, {100 * v['ci95'][1]:.1f}]"]
                for cat, v in [*result["per_category"].items(), ("all", result["overall"])]]
        failures = [(images[(e["prompt"], e["seed"])], f"{e['prompt']} (seed {e['seed']}): " + "; ".join(e["failed"]))
                    for examples in result["examples"].values() for e in examples]
        return {"markdown": cb.markdown(result), "rows": rows, "failures": failures, "result": result}


def _word_spans(text: str) -> list[tuple[int, int]]:
    import re

    return [m.span() for m in re.finditer(r"\S+", text)]


__all__ = ["Backend", "Cancelled", "GenerateRequest", "MAX_BATCH", "MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS",
           "RANDOM_SEED", "draw_regions", "read_upload", "region_strings"]
