"""The web page of `t2ikit ui`: gradio Blocks laid out the way an AUTOMATIC1111 user expects (Generate, Edit,
Explain, PNG Info, Bench tabs), each event a thin call into `ui.backend.Backend`.

Offline by construction: system fonts only (no Google Fonts request), analytics off, no share link; the
server's launch settings live in ui/server.py. Bad input raises `gr.Error` with the backend's sentence, shown
as a message in the page; the server keeps serving.
"""

from __future__ import annotations

import functools
import threading

import gradio as gr
import numpy as np

from t2ikit.control.layout import LAYOUTS
from t2ikit.ui.backend import MAX_BATCH, RANDOM_SEED, REGION_COLUMNS, Backend, Cancelled, GenerateRequest, \
    draw_regions, read_upload

MODEL_EVENTS = "model"  # concurrency id of every event that runs the model: one at a time, the rest queued
CONDITION_NAMES = ["sketch", "depth", "mask", "reference"]
EDIT_METHODS = ["p2p", "swap", "blend"]
EDIT_MASKS = ["none", "auto", "attention", "detect"]
ATTENTION_VARIANTS = ["", "topk:4", "topp:0.9", "prune", "hier:2/4/1"]
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # no web font: nothing is fetched from a CDN
MONO_FONTS = ["ui-monospace", "monospace"]


def theme():
    return gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)


def _shown(fn):
    """Run an event handler; bad input (ValueError / TypeError) and a cancel become a message in the page."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Cancelled:
            raise gr.Error("Generation cancelled.", title="Cancelled") from None
        except (ValueError, TypeError) as err:
            raise gr.Error(str(err), title="Bad input") from None

    return wrapper


def _int_or_none(x):
    return None if x is None or x == "" else int(x)


def _float_or_none(x):
    return None if x is None or x == "" else float(x)


def _editor_image(value):
    """The composite of a gr.ImageEditor value (numpy RGBA) as an RGB PIL image, or None if nothing is drawn."""
    from PIL import Image

    if not value or value.get("composite") is None:
        return None
    comp = np.asarray(value["composite"])
    if comp.ndim != 3 or comp.size == 0:
        return None
    layers = [np.asarray(layer) for layer in value.get("layers") or [] if layer is not None]
    if not any(layer.ndim == 3 and layer.shape[-1] == 4 and layer[..., 3].any() for layer in layers):
        return None  # an empty canvas is no sketch
    return Image.fromarray(comp[..., :3].astype(np.uint8))


def _cfg_interval(cfg_end) -> tuple[float, float] | None:
    """The "CFG until" slider's value -> guidance_interval (0, end); None (CFG on every step) at 1 or unset."""
    return None if cfg_end is None or float(cfg_end) >= 1 else (0.0, float(cfg_end))


def _drawn_box(value, size: tuple[int, int]) -> list[int]:
    """[x0, y0, x1, y1] in image pixels of everything drawn on the region canvas (scaled from the canvas)."""
    layers = [np.asarray(layer) for layer in (value or {}).get("layers") or [] if layer is not None]
    alpha = sum((layer[..., 3] > 0) for layer in layers if layer.ndim == 3 and layer.shape[-1] == 4)
    if not layers or not np.any(alpha):
        raise ValueError("draw a box (a stroke around the area) on the region canvas first")
    ys, xs = np.nonzero(alpha)
    ch, cw = alpha.shape
    h, w = size
    return [int(xs.min() * w / cw), int(ys.min() * h / ch), int(np.ceil((xs.max() + 1) * w / cw)),
            int(np.ceil((ys.max() + 1) * h / ch))]


def _canvas(size: tuple[int, int], colour: str):
    """A blank canvas for a drawing of `size` (height, width), scaled up to about 256 px."""
    from PIL import Image

    h, w = size
    k = max(1, 256 // max(h, w))
    return {"background": np.asarray(Image.new("RGB", (w * k, h * k), colour)), "layers": [], "composite": None}


def build_app(backend: Backend) -> gr.Blocks:
    d = backend.defaults()
    size = (d["height"], d["width"])
    from t2ikit.diffusion.samplers import SAMPLERS, sampler_from_display_name
    from t2ikit.text.weighting import MODES
    from t2ikit.world.categories import CATEGORIES

    with gr.Blocks(title="t2ikit", analytics_enabled=False) as demo:
        params_state = gr.State([])  # A1111 parameter text of each gallery image
        files_state = gr.State([])  # the PNG of each gallery image
        with gr.Row():
            model = gr.Dropdown(backend.model_choices(), value=backend.pipe.name, label="Model", scale=3,
                                elem_id="model")
            model_status = gr.Markdown(f"loaded: `{backend.pipe.name}`", elem_id="model-status")
        with gr.Tabs(elem_id="tabs") as tabs:
            # --- Generate ---------------------------------------------------------------------------------
            with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
                with gr.Row():
                    with gr.Column(scale=3):
                        prompt = gr.Textbox(label="Prompt", lines=2, elem_id="prompt",
                                            placeholder="a red circle (above:1.2) a blue square")
                        negative = gr.Textbox(label="Negative prompt", lines=1, elem_id="negative")
                        readout = gr.Markdown("*(type a prompt: its weights, objects and relations appear here)*",
                                              elem_id="readout")
                    with gr.Column(scale=1, min_width=160):
                        generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                        cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
                with gr.Row():
                    with gr.Column():
                        with gr.Row():
                            sampler = gr.Dropdown(list(SAMPLERS), value=d["sampler"], label="Sampler",
                                                  elem_id="sampler")
                            steps = gr.Slider(1, 150, value=d["steps"], step=1, label="Steps", elem_id="steps")
                        with gr.Row():
                            width = gr.Number(d["width"], label="Width", precision=0, elem_id="width")
                            height = gr.Number(d["height"], label="Height", precision=0, elem_id="height")
                            count = gr.Slider(1, MAX_BATCH, value=1, step=1, label="Batch count", elem_id="count")
                        with gr.Row():
                            guidance = gr.Slider(0, 30, value=d["guidance"], step=0.5, label="CFG scale",
                                                 elem_id="guidance")
                            rescale = gr.Slider(0, 1, value=d["guidance_rescale"], step=0.05,
                                                label="CFG rescale (phi; keeps high CFG from over-exposing)",
                                                elem_id="guidance-rescale")
                        with gr.Row():  # the seed and its buttons on a row of their own, so none wraps out of view
                            seed = gr.Number(RANDOM_SEED, label="Seed (-1 = random)", precision=0, elem_id="seed")
                            random_seed = gr.Button("Random", min_width=60, scale=0, elem_id="random-seed")
                            reuse_seed = gr.Button("Reuse", min_width=60, scale=0, elem_id="reuse-seed")
                        weighting = gr.Radio(list(MODES), value="a1111", label="Prompt weighting", elem_id="weighting")
                        with gr.Accordion("Regions (a phrase per box)", open=False, elem_id="regions-accordion"):
                            regions = gr.Dataframe(headers=list(REGION_COLUMNS), value=[], type="array",
                                                   datatype=["number"] * 4 + ["str"], column_count=5,
                                                   interactive=True, label="Regions: x0, y0, x1, y1 (pixels), phrase",
                                                   elem_id="regions")
                            with gr.Row():
                                region_canvas = gr.ImageEditor(value=_canvas(size, "white"), type="numpy", layers=False,
                                                               brush=gr.Brush(colors=["#e6194b"], default_size=3),
                                                               sources=[], transforms=[], label="Draw a box",
                                                               elem_id="region-canvas", height=300)
                                region_preview = gr.Image(value=draw_regions(size, []), label="Regions on the canvas",
                                                          interactive=False, elem_id="region-preview", height=300)
                            with gr.Row():
                                region_phrase = gr.Textbox(label="Phrase of the drawn box", elem_id="region-phrase")
                                add_region = gr.Button("Add drawn box", elem_id="add-region")
                                clear_regions = gr.Button("Clear regions", elem_id="clear-regions")
                            region_mode = gr.Radio(["attention", "noise", "boxes"], value="attention",
                                                   label="Region mode (boxes: each row places a phrase of the prompt)",
                                                   elem_id="region-mode")
                        with gr.Accordion("Condition image (adapters)", open=False, elem_id="condition-accordion"):
                            with gr.Row():
                                condition = gr.Dropdown(["none"] + CONDITION_NAMES, value="none", label="Adapter",
                                                        elem_id="condition")
                                condition_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="Adapter scale",
                                                            elem_id="condition-scale")
                            with gr.Row():
                                condition_upload = gr.File(label="Upload a condition image (the image's size)",
                                                           file_types=["image"], type="filepath",
                                                           elem_id="condition-upload")
                                sketch = gr.ImageEditor(value=_canvas(size, "black"), type="numpy", layers=False,
                                                        brush=gr.Brush(colors=["#ffffff"], default_size=2),
                                                        sources=[], transforms=[], elem_id="sketch", height=300,
                                                        label="... or draw a sketch (white lines; scaled to the size)")
                        with gr.Accordion("Attention and relations", open=False):
                            attention = gr.Dropdown(ATTENTION_VARIANTS, value="", allow_custom_value=True,
                                                    label="Sparse / hierarchical attention (topk:K, topp:P, prune, "
                                                          "hier:W/P/S; empty = dense)", elem_id="attention")
                            relation = gr.Slider(0, 500, value=d["relation_guidance"], step=10,
                                                 label="Relation guidance (0 = off)", elem_id="relation")
                            layout = gr.Dropdown(["", "none", *LAYOUTS[1:]], value="",
                                                 label="Layout from the prompt: auto = a box per object, placed so "
                                                       "the relations hold; many = only for prompts naming several "
                                                       "objects; many+relations = those and prompts stating a "
                                                       "relation; empty = the model's default", elem_id="layout")
                            region_layout = gr.Checkbox(False, label="Regions from the prompt: a region prompt per "
                                                                     "object phrase, in its planned box (region "
                                                                     "layout auto)", elem_id="region-layout")
                            cheap_guidance = gr.Checkbox(False, label="Cheaper relation guidance: read the encoder's "
                                                                      "maps only (latent layers encoder)",
                                                         elem_id="latent-layers")
                            fast = gr.Checkbox(False, label="Fast: CFG on the first 70% of the steps (docs/FAST.md)",
                                               elem_id="fast")
                            compiled = gr.Checkbox(False, label="Compile the UNet (torch.compile: the first press "
                                                                "compiles it, later ones are faster)",
                                                   elem_id="compile")
                            cfg_end = gr.Slider(0.05, 1, value=1, step=0.05,
                                                label="CFG until this fraction of the steps; after it, the prompt's "
                                                      "prediction alone, half the UNet rows (guidance interval)",
                                                elem_id="guidance-interval")
                            shared_pass = gr.Checkbox(False, label="Share the relation guidance's and boxes' UNet pass "
                                                                   "with the step's prediction (cheaper; latent pass "
                                                                   "shared)",
                                                      elem_id="latent-pass")
                    with gr.Column():
                        gallery = gr.Gallery(label="Results", columns=4, height=360, format="png", preview=False,
                                             elem_id="gallery", interactive=False)
                        seed_used = gr.Textbox(label="Seeds used", interactive=False, elem_id="seed-used")
                        parameters = gr.Textbox(label="Parameters", lines=4, interactive=False, elem_id="parameters")
                        notes = gr.Markdown("", elem_id="notes")
                        with gr.Row():
                            to_edit = gr.Button("Send to Edit", elem_id="send-to-edit")
                            to_explain = gr.Button("Explain", elem_id="send-to-explain")
                        selected = gr.Number(0, visible=False, precision=0)

            # --- Edit ------------------------------------------------------------------------------------
            with gr.Tab("Edit", id="edit", elem_id="tab-edit"):
                with gr.Row():
                    with gr.Column():
                        edit_image = gr.Image(label="Image to edit", type="filepath", sources=["upload"],
                                              elem_id="edit-image", height=256)
                        edit_source = gr.Textbox(label="Source prompt (what the image shows)", elem_id="edit-source")
                        edit_target = gr.Textbox(label="Target prompt", elem_id="edit-target")
                        edit_instruction = gr.Textbox(label="... or an instruction ('change the red circle to a "
                                                            "blue square')", elem_id="edit-instruction")
                        with gr.Row():
                            edit_method = gr.Radio(EDIT_METHODS, value="p2p", label="Method", elem_id="edit-method")
                            edit_mask = gr.Radio(EDIT_MASKS, value="none", label="Mask", elem_id="edit-mask")
                        with gr.Row():
                            edit_steps = gr.Slider(1, 100, value=20, step=1, label="Steps", elem_id="edit-steps")
                            edit_guidance = gr.Slider(1, 15, value=1.0, step=0.5, label="CFG scale",
                                                      elem_id="edit-guidance")
                        edit_btn = gr.Button("Edit", variant="primary", elem_id="edit")
                    with gr.Column():
                        with gr.Row():
                            edit_before = gr.Image(label="Mask over the input", interactive=False, height=200,
                                                   elem_id="edit-mask-before")
                            edit_after = gr.Image(label="Mask over the edit", interactive=False, height=200,
                                                  elem_id="edit-mask-after")
                        edit_out = gr.Image(label="Edited", interactive=False, format="png", elem_id="edit-out",
                                            height=256)
                        edit_params = gr.Textbox(label="Parameters", lines=3, interactive=False, elem_id="edit-params")

            # --- Explain ---------------------------------------------------------------------------------
            with gr.Tab("Explain", id="explain", elem_id="tab-explain"):
                with gr.Row():
                    with gr.Column():
                        ex_prompt = gr.Textbox(label="Prompt", elem_id="explain-prompt")
                        with gr.Row():
                            ex_seed = gr.Number(0, label="Seed", precision=0, elem_id="explain-seed")
                            ex_steps = gr.Slider(1, 150, value=d["steps"], step=1, label="Steps",
                                                 elem_id="explain-steps")
                            ex_guidance = gr.Slider(0, 30, value=d["guidance"], step=0.5, label="CFG scale",
                                                    elem_id="explain-guidance")
                        with gr.Row():
                            ex_from = gr.Slider(0, 1, value=0, step=0.05, label="From (fraction of the steps)",
                                                elem_id="explain-from")
                            ex_to = gr.Slider(0, 1, value=1, step=0.05, label="To", elem_id="explain-to")
                        ex_layers = gr.CheckboxGroup(backend.layer_choices(), value=[], elem_id="explain-layers",
                                                     label="Cross-attention blocks (none checked = all)")
                        ex_btn = gr.Button("Explain", variant="primary", elem_id="explain")
                    with gr.Column():
                        ex_image = gr.Image(label="Image", interactive=False, elem_id="explain-image", height=200)
                        ex_maps = gr.Gallery(label="Attention per word and per phrase", columns=4, height=360, preview=False,
                                             elem_id="explain-maps")
                        ex_note = gr.Markdown("", elem_id="explain-note")

            # --- PNG Info --------------------------------------------------------------------------------
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab-pnginfo"):
                with gr.Row():
                    with gr.Column():
                        info_file = gr.File(label="Drop a PNG made by t2ikit or AUTOMATIC1111", type="filepath",
                                            elem_id="info-file")
                        info_image = gr.Image(label="Image", interactive=False, elem_id="info-image", height=256)
                    with gr.Column():
                        info_text = gr.Textbox(label="Parameters", lines=6, interactive=False, elem_id="info-text")
                        info_json = gr.JSON(label="Parsed", elem_id="info-json")
                        info_send = gr.Button("Send to Generate", elem_id="info-send")

            # --- Bench -----------------------------------------------------------------------------------
            with gr.Tab("Bench", id="bench", elem_id="tab-bench"):
                with gr.Row():
                    with gr.Column():
                        b_categories = gr.CheckboxGroup(list(CATEGORIES), value=list(CATEGORIES[:2]),
                                                        label="CompBench categories", elem_id="bench-categories")
                        with gr.Row():
                            b_prompts = gr.Slider(1, 20, value=2, step=1, label="Prompts per category",
                                                  elem_id="bench-prompts")
                            b_seeds = gr.Slider(1, 4, value=1, step=1, label="Seeds per prompt", elem_id="bench-seeds")
                            b_steps = gr.Slider(1, 50, value=d["steps"], step=1, label="Steps", elem_id="bench-steps")
                        b_btn = gr.Button("Run CompBench subset", variant="primary", elem_id="bench")
                    with gr.Column():
                        b_table = gr.Dataframe(headers=["category", "images", "accuracy %", "95% CI"],
                                               label="Per category (Wilson intervals)", elem_id="bench-table")
                        b_failures = gr.Gallery(label="Failures and the oracle's reasons", columns=3, height=300,
                                                preview=False, elem_id="bench-failures")
                        b_reasons = gr.Markdown("", elem_id="bench-reasons")

        # --- events ------------------------------------------------------------------------------------
        model_event = dict(concurrency_id=MODEL_EVENTS, concurrency_limit=1)

        @_shown
        def on_model(name):
            return f"loaded: `{backend.switch_model(name)}`"

        model.change(on_model, model, model_status, api_name="switch_model", **model_event)

        prompt.change(lambda p, w: backend.parse_readout(p, w), [prompt, weighting], readout, concurrency_limit=None,
                      api_visibility="private", trigger_mode="always_last", show_progress="hidden")
        weighting.change(lambda p, w: backend.parse_readout(p, w), [prompt, weighting], readout, concurrency_limit=None,
                         api_visibility="private", show_progress="hidden")

        @_shown
        def on_generate(prompt, negative, sampler, steps, guidance, seed, width, height, count, weighting, regions,
                        region_mode, condition, condition_scale, condition_upload, sketch, attention, relation,
                        layout, region_layout, cheap_guidance, fast, compiled, cfg_end, shared_pass, rescale,
                        request: gr.Request, progress=gr.Progress()):
            image = None
            if condition != "none":
                image = read_upload(condition_upload, f"{condition} condition")[0] if condition_upload \
                    else _editor_image(sketch)
                if image is not None and not condition_upload:  # a drawing is scaled to the image size
                    image = image.resize((int(width or d["width"]), int(height or d["height"])))
            req = GenerateRequest(prompt=prompt or "", negative=negative or "", sampler=sampler or None,
                                  steps=_int_or_none(steps), guidance=_float_or_none(guidance),
                                  seed=RANDOM_SEED if seed is None else int(seed), width=_int_or_none(width),
                                  height=_int_or_none(height), count=int(count), weighting=weighting,
                                  regions=regions or [], region_mode=region_mode,
                                  condition=None if condition == "none" else condition, condition_image=image,
                                  condition_scale=float(condition_scale), attention=attention or None,
                                  relation_guidance=_float_or_none(relation), layout=layout or None,
                                  region_layout=bool(region_layout), fast=bool(fast),
                                  latent_layers="encoder" if cheap_guidance else None, compile=bool(compiled),
                                  guidance_interval=_cfg_interval(cfg_end),
                                  latent_pass="shared" if shared_pass else None,
                                  guidance_rescale=_float_or_none(rescale))
            flag = backend.cancels.setdefault(request.session_hash or "api", threading.Event())
            flag.clear()
            out = backend.generate(req, progress=lambda i, n: progress((i, n), desc="sampling", unit="steps"),
                                   cancel=flag)
            seeds = ", ".join(map(str, out["seeds"]))
            captions = [f"seed {s}" for s in out["seeds"]]
            note = "\n".join(f"⚠ {w}" for w in out["warnings"])
            return (list(zip(out["files"], captions)), out["parameters"], out["files"], seeds,
                    out["parameters"][0], note, 0)

        gen_inputs = [prompt, negative, sampler, steps, guidance, seed, width, height, count, weighting, regions,
                      region_mode, condition, condition_scale, condition_upload, sketch, attention, relation, layout,
                      region_layout, cheap_guidance, fast, compiled, cfg_end, shared_pass, rescale]
        generate_btn.click(on_generate, gen_inputs,
                           [gallery, params_state, files_state, seed_used, parameters, notes, selected],
                           api_name="generate", **model_event)
        prompt.submit(on_generate, gen_inputs,
                      [gallery, params_state, files_state, seed_used, parameters, notes, selected],
                      api_visibility="private", **model_event)

        def on_cancel(request: gr.Request):
            flag = backend.cancels.get(request.session_hash or "api")
            if flag is not None:
                flag.set()
            gr.Info("Cancelling at the next step.")

        cancel_btn.click(on_cancel, None, None, concurrency_limit=None, api_visibility="private")

        random_seed.click(lambda: RANDOM_SEED, None, seed, concurrency_limit=None, api_visibility="private")
        reuse_seed.click(lambda used, k: int(used.split(",")[int(k or 0)]) if used else RANDOM_SEED,
                         [seed_used, selected], seed, concurrency_limit=None, api_visibility="private")

        def on_select(texts, evt: gr.SelectData):
            k = evt.index if isinstance(evt.index, int) else 0
            return (texts[k] if k < len(texts) else ""), k

        gallery.select(on_select, params_state, [parameters, selected], concurrency_limit=None, api_visibility="private")

        @_shown
        def on_add_region(rows, drawn, phrase, width, height):
            if not (phrase or "").strip():
                raise ValueError("give the drawn box a phrase, e.g. 'a red circle'")
            box = _drawn_box(drawn, (int(height or d["height"]), int(width or d["width"])))
            rows = [list(r) for r in (rows or []) if any(c not in (None, "") for c in r)]
            return rows + [box + [phrase.strip()]]  # the canvas keeps its strokes: its bin icon clears it

        add_region.click(on_add_region, [regions, region_canvas, region_phrase, width, height], regions,
                         concurrency_limit=None, api_visibility="private")
        clear_regions.click(lambda: [], None, regions, concurrency_limit=None, api_visibility="private")

        @_shown
        def on_regions(rows, width, height):
            return draw_regions((int(height or d["height"]), int(width or d["width"])), rows)

        regions.change(on_regions, [regions, width, height], region_preview, concurrency_limit=None, api_visibility="private")

        def on_to_edit(files, texts, k):
            k = int(k or 0)
            if not files:
                raise gr.Error("generate an image first", title="Nothing to send")
            from t2ikit.cli.info import parse_parameters

            from t2ikit.text.weighting import plain_text

            p = parse_parameters(texts[k])  # the edit reads plain text: the weights' syntax is dropped
            return files[k], plain_text(p["prompt"], p["settings"].get("Weighting", "a1111")), gr.Tabs(selected="edit")

        to_edit.click(on_to_edit, [files_state, params_state, selected], [edit_image, edit_source, tabs],
                      concurrency_limit=None, api_visibility="private")

        def on_to_explain(texts, k):
            k = int(k or 0)
            if not texts:
                raise gr.Error("generate an image first", title="Nothing to explain")
            from t2ikit.cli.info import parse_parameters

            p = parse_parameters(texts[k])
            s = p["settings"]
            return p["prompt"], s.get("Seed", 0), s.get("Steps", d["steps"]), s.get("CFG scale", d["guidance"]), \
                gr.Tabs(selected="explain")

        to_explain.click(on_to_explain, [params_state, selected], [ex_prompt, ex_seed, ex_steps, ex_guidance, tabs],
                         concurrency_limit=None, api_visibility="private")

        @_shown
        def on_edit(image_path, source, target, instruction, method, mask, steps, guidance, progress=gr.Progress()):
            if not image_path:
                raise ValueError("upload an image to edit, or send one from Generate")
            image = read_upload(image_path, "image to edit")[0]
            out = backend.edit(image, source, target, instruction, method, mask, int(steps), float(guidance))
            before = after = None
            if out["mask"] is not None:
                from PIL import Image

                before = Image.blend(image, Image.merge("RGB", [out["mask"]] * 3), 0.5)
                with Image.open(out["file"]) as edited:
                    after = Image.blend(edited.convert("RGB"), Image.merge("RGB", [out["mask"]] * 3), 0.5)
            text = out["parameters"] + "".join(f"\n⚠ {w}" for w in out["warnings"])
            return before, after, out["file"], text

        edit_btn.click(on_edit, [edit_image, edit_source, edit_target, edit_instruction, edit_method, edit_mask,
                                 edit_steps, edit_guidance], [edit_before, edit_after, edit_out, edit_params],
                       api_name="edit", **model_event)

        @_shown
        def on_explain(prompt, seed, steps, guidance, lo, hi, layers):
            out = backend.explain(prompt or "", _int_or_none(seed), _int_or_none(steps), _float_or_none(guidance),
                                  (float(lo), float(hi)), layers or None)
            return out["image"], out["maps"], (f"steps {out['steps'][0]}..{out['steps'][-1]} averaged; the image is "
                                                 "sampled again with the model's defaults (as `t2ikit explain`)")

        ex_btn.click(on_explain, [ex_prompt, ex_seed, ex_steps, ex_guidance, ex_from, ex_to, ex_layers],
                     [ex_image, ex_maps, ex_note], api_name="explain", **model_event)

        @_shown
        def on_info(path):
            if not path:
                return None, "", None
            out = backend.png_info(path)
            return out["image"], out["text"], {k: out[k] for k in ("prompt", "negative_prompt", "settings")}

        info_file.change(on_info, info_file, [info_image, info_text, info_json], api_name="png_info",
                         concurrency_limit=4)

        def on_info_send(parsed):
            if not parsed:
                raise gr.Error("drop a PNG with parameters first", title="Nothing to send")
            s = parsed.get("settings", {})
            w, h = (int(v) for v in str(s.get("Size", f"{d['width']}x{d['height']}")).split("x"))
            name = sampler_from_display_name(str(s.get("Sampler", ""))) or d["sampler"]
            return (parsed.get("prompt", ""), parsed.get("negative_prompt", ""), s.get("Steps", d["steps"]),
                    s.get("CFG scale", d["guidance"]), s.get("Seed", RANDOM_SEED), w, h, name,
                    s.get("Relation guidance", 0.0), s.get("Weighting", "a1111"),  # absent from a PNG: off
                    s.get("Guidance rescale", 0.0), gr.Tabs(selected="generate"))

        info_send.click(on_info_send, info_json, [prompt, negative, steps, guidance, seed, width, height, sampler,
                                                   relation, weighting, rescale, tabs], concurrency_limit=None, api_visibility="private")

        @_shown
        def on_bench(categories, n_prompts, seeds, steps, progress=gr.Progress()):
            out = backend.bench(list(categories or []), int(n_prompts), int(seeds), int(steps),
                                progress=lambda i, n: progress((i, n), desc="CompBench", unit="images"))
            reasons = "\n".join(f"{k + 1}. {caption}" for k, (_, caption) in enumerate(out["failures"]))
            return out["rows"], out["failures"], reasons or "no failures"

        b_btn.click(on_bench, [b_categories, b_prompts, b_seeds, b_steps], [b_table, b_failures, b_reasons],
                    api_name="bench",
                    **model_event)

        # A plain API for scripts (gradio_client): prompt and the main knobs in, JSON out.
        def txt2img(prompt: str, negative: str = "", seed: int = RANDOM_SEED, steps: int = 0, guidance: float = -1.0,
                    sampler: str = "", width: int = 0, height: int = 0, count: int = 1, fast: bool = False,
                    cfg_end: float = 1.0) -> dict:
            """Generate; steps 0, guidance < 0, sampler "" and size 0 take the model's defaults; fast: the fast
            path's settings (docs/FAST.md); cfg_end < 1: CFG on that first fraction of the steps only."""
            req = GenerateRequest(prompt=prompt, negative=negative, seed=int(seed), steps=int(steps) or None,
                                  guidance=None if guidance < 0 else float(guidance), sampler=sampler or None,
                                  width=int(width) or None, height=int(height) or None, count=int(count),
                                  fast=bool(fast), guidance_interval=_cfg_interval(cfg_end))
            out = _shown(backend.generate)(req)
            return {"prompt": prompt, "seeds": out["seeds"], "files": out["files"], "parameters": out["parameters"],
                    "warnings": out["warnings"]}

        gr.api(txt2img, api_name="txt2img", **model_event)
    return demo


__all__ = ["build_app", "theme"]
