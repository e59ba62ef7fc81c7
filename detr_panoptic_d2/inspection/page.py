"""The pipeline inspector's pages: an HTML file with PNGs showing each step for one image, and
the index page linking them.

Sections: the input; the encoded image (3-component PCA as RGB, and per-position norm); per
kept object its box and class, its box after every decoder layer, its M attention heat-maps
over the encoded image, its mask logits after the FPN-style head and its binary mask; the final
argmax panoptic map. Grid sizes are named with the model's real strides.
"""
import html
import os
from urllib.parse import quote

import numpy as np
import torch
from detectron2.utils.visualizer import Visualizer
from matplotlib import colormaps
from PIL import Image, ImageDraw

from ..data.metadata import class_names
from ..visualization import draw_panoptic

PAGE_STYLE = (
    "body{font-family:sans-serif;margin:1em 2em}figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}"
    "figcaption{font-size:90%;color:#444}img{max-width:100%;image-rendering:pixelated}"
    "section{border-top:1px solid #ccc;padding-top:.5em}"
)


def _colorize(values, cmap, low, high):
    """h x w tensor -> h x w x 3 uint8 through a matplotlib colormap over [low, high]."""
    scaled = ((values.float() - low) / max(high - low, 1e-12)).clamp(0, 1).numpy()
    return (colormaps[cmap](scaled)[..., :3] * 255).astype(np.uint8)


def _enlarge(array, size):
    """h x w x 3 uint8 -> size (H, W), nearest neighbour: each cell stays a visible block."""
    return np.asarray(Image.fromarray(array).resize(size[::-1], Image.NEAREST))


def pca_rgb(features):
    """d x h x w features -> h x w x 3 uint8: the 3 principal components, each scaled to 0..255."""
    d, h, w = features.shape
    x = features.reshape(d, -1).T.double()
    x = x - x.mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    comps = x @ v[: min(3, v.shape[0])].T
    comps = torch.nn.functional.pad(comps, (0, 3 - comps.shape[1]))
    low, high = comps.min(0).values, comps.max(0).values
    comps = (comps - low) / (high - low).clamp(min=1e-12)
    return (comps.reshape(h, w, 3).numpy() * 255).astype(np.uint8)


def _heatmap_strip(maps, size, gap=4):
    """M x h x w maps -> one image of M heat-maps side by side (shared colour scale)."""
    high = float(maps.max())
    tiles = [_enlarge(_colorize(m, "viridis", 0.0, high), size) for m in maps]
    spacer = np.full((size[0], gap, 3), 255, dtype=np.uint8)
    return np.concatenate([part for tile in tiles for part in (tile, spacer)][:-1], axis=1)


def layer_colours(num_layers):
    """One colour per decoder layer, first to last along a ramp: num_layers x 3 uint8."""
    return (colormaps["plasma"](np.linspace(0.0, 0.85, num_layers))[:, :3] * 255).astype(np.uint8)


def draw_layer_boxes(image_rgb, layer_boxes):
    """H x W x 3 uint8 with the L boxes (L x 4, x0 y0 x1 y1 in pixels) drawn in layer_colours,
    thin, the last layer's bold."""
    picture = Image.fromarray(np.ascontiguousarray(image_rgb))
    draw = ImageDraw.Draw(picture)
    last = len(layer_boxes) - 1
    for layer, (box, colour) in enumerate(zip(layer_boxes, layer_colours(len(layer_boxes)))):
        draw.rectangle([float(v) for v in box], outline=tuple(int(c) for c in colour), width=3 if layer == last else 1)
    return np.asarray(picture)


def _layer_legend(num_layers):
    """HTML: a coloured swatch and "layer l" for each decoder layer, on its own line."""
    items = "".join(
        f'<span style="color:rgb({r},{g},{b})">&#9632;</span> layer {layer} '
        for layer, (r, g, b) in enumerate(layer_colours(num_layers).tolist(), 1)
    )
    return f'<br><span class="legend">{items}(last bold)</span>'


def _figure(name, caption, legend=""):
    """HTML figure of the PNG ``name`` with a text ``caption`` and, after it, ``legend`` (HTML)."""
    caption = html.escape(caption)
    return f'<figure><img src="{name}" alt="{caption}"><figcaption>{caption}{legend}</figcaption></figure>'


def write_pipeline_page(trace, image_rgb, metadata, out_dir, title):
    """Writes ``out_dir/index.html`` and its PNGs for a PipelineTrace of ``image_rgb``
    (H x W x 3 uint8). Returns the path of the HTML file."""
    os.makedirs(out_dir, exist_ok=True)
    h, w = image_rgb.shape[:2]
    # Coarse maps are shown enlarged to about the image's size (a whole number of pixels per cell).
    grid = trace.encoded.shape[-2:]
    cell = max(1, min(h // grid[0], w // grid[1]))
    big = (grid[0] * cell, grid[1] * cell)
    tile = (grid[0] * max(1, cell // 2), grid[1] * max(1, cell // 2))  # M heat-maps side by side

    def save(name, array):
        Image.fromarray(np.ascontiguousarray(array)).save(os.path.join(out_dir, name))
        return name

    save("input.png", image_rgb)
    save("encoded_pca.png", _enlarge(pca_rgb(trace.encoded), big))
    norm = trace.encoded.norm(dim=0)
    save("encoded_norm.png", _enlarge(_colorize(norm, "magma", float(norm.min()), float(norm.max())), big))
    save("panoptic.png", draw_panoptic(image_rgb, trace.panoptic_seg, trace.segments_info, metadata))

    d, s, num_layers = trace.encoded.shape[0], trace.stride, trace.num_layers
    if trace.box_aware:
        maps = "box-aware maps: each reads the object's box embedding, its box and the pixel positions"
    else:
        maps = "DETR's maps: each reads the object's box embedding and the encoded image"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Network input {trace.input_size[1]} x {trace.input_size[0]} px; encoded image {d} x {grid[0]} x "
        f"{grid[1]} (d x H/{s} x W/{s}); decoder {html.escape(trace.decoder)} ({num_layers} layers); "
        f"{len(trace.objects)} of {trace.num_queries} queries kept.</p>",
        '<section id="input"><h2>Input and encoded image</h2>',
        _figure("input.png", "input image"),
        _figure("encoded_pca.png", "encoded image: 3 principal components as RGB"),
        _figure("encoded_norm.png", "encoded image: norm per position"),
        "</section>",
    ]
    for k, obj in enumerate(trace.objects):
        name = class_names(metadata)[obj.category_id]
        label = f"{name} {obj.score:.0%}"
        boxed = Visualizer(image_rgb, metadata).overlay_instances(boxes=[obj.box], labels=[label]).get_image()
        limit = float(obj.mask_logits.abs().max())
        logits = _colorize(obj.mask_logits, "coolwarm", -limit, limit)
        mask = Visualizer(image_rgb, metadata).draw_binary_mask(obj.mask.numpy().astype(np.uint8), color="red")
        x0, y0, x1, y1 = (float(v) for v in obj.box)
        body += [
            f'<section class="object" id="object-{k}"><h2>Object {k}: {html.escape(name)}</h2>',
            f"<p>query {obj.query}, class {html.escape(name)} (id {obj.category_id}), score {obj.score:.3f}, "
            f"box x0={x0:.0f} y0={y0:.0f} x1={x1:.0f} y1={y1:.0f}</p>",
            _figure(save(f"object_{k}_box.png", boxed), "box and class"),
            _figure(
                save(f"object_{k}_layers.png", draw_layer_boxes(image_rgb, obj.layer_boxes)),
                f"box after decoder layer 1..{num_layers} ({trace.decoder})",
                _layer_legend(num_layers),
            ),
            _figure(
                save(f"object_{k}_attention.png", _heatmap_strip(obj.attention, tile)),
                f"{obj.attention.shape[0]} attention heat-maps over the encoded image (H/{s} x W/{s}; heads 1..M, "
                f"left to right); {maps}",
            ),
            _figure(
                save(f"object_{k}_mask_logits.png", _enlarge(logits, (h, w))),
                f"mask logits after the FPN-style head ({obj.mask_logits.shape[0]} x {obj.mask_logits.shape[1]}, "
                f"H/{trace.mask_stride} x W/{trace.mask_stride}; blue < 0 < red, |max| {limit:.2f})",
            ),
            _figure(save(f"object_{k}_mask.png", mask.get_image()), "binary mask (logits > 0)"),
            "</section>",
        ]
    body += [
        '<section id="panoptic"><h2>Panoptic segmentation (pixel-wise argmax over the kept masks)</h2>',
        _figure("panoptic.png", f"{len(trace.segments_info)} segments"),
        "</section>",
    ]
    page = os.path.join(out_dir, "index.html")
    with open(page, "w", encoding="utf-8") as f:
        f.write(
            f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{PAGE_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
        )
    return page


def write_index_page(pages, out_dir):
    """Writes ``out_dir/index.html`` linking the pipeline pages: ``pages`` is a list of
    (folder name under ``out_dir`` holding the page, link text). Returns the file's path."""
    links = "".join(f'<li><a href="{quote(name)}/index.html">{html.escape(text)}</a></li>' for name, text in pages)
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write('<!DOCTYPE html><html><head><meta charset="utf-8"><title>DETR pipeline</title></head><body>')
        f.write("<h1>DETR panoptic pipeline</h1><ul>" + links + "</ul></body></html>\n")
    return path
