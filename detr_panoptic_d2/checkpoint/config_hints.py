"""Which config options fit a converted checkpoint: read off its tensors and training settings.

Most sizes are visible in the weights (hidden dim, queries, layers, classes, ResNet depth);
attention heads and a dilated res5 (DC5) are not, and come from the official checkpoint's
``args`` or HuggingFace's ``config.json`` when present.
"""
import re

# Blocks per stage (res2..res5) and block kind -> MODEL.RESNETS.DEPTH.
_RESNET_DEPTHS = {
    ((2, 2, 2, 2), False): 18,
    ((3, 4, 6, 3), False): 34,
    ((3, 4, 6, 3), True): 50,
    ((3, 4, 23, 3), True): 101,
    ((3, 8, 36, 3), True): 152,
}


def _count(state, pattern):
    """Number of distinct values of the first group of ``pattern`` over the keys."""
    regex = re.compile(pattern)
    return len({m[1] for m in map(regex.match, state) if m})


def _resnet_opts(state):
    blocks = tuple(_count(state, rf"backbone\.res{s}\.(\d+)\.") for s in range(2, 6))
    bottleneck = "backbone.res2.0.conv3.weight" in state
    depth = _RESNET_DEPTHS.get((blocks, bottleneck))
    if depth is None:
        return []
    res2_out = state[f"backbone.res2.0.conv{3 if bottleneck else 2}.weight"].shape[0]
    return ["MODEL.RESNETS.DEPTH", str(depth), "MODEL.RESNETS.RES2_OUT_CHANNELS", str(res2_out)]


def _training_opts(args, hf_config):
    """Heads and dilation from the official ``args`` (argparse.Namespace) or HuggingFace config."""
    heads = getattr(args, "nheads", None) or (hf_config or {}).get("encoder_attention_heads")
    dilation = getattr(args, "dilation", None) or (hf_config or {}).get("dilation")
    opts = []
    if heads:
        opts += ["MODEL.DETR.NHEADS", str(heads), "MODEL.DETR.MASK_HEAD.NHEADS", str(heads)]
    if dilation:
        opts += ["MODEL.RESNETS.RES5_DILATION", "2"]
    return opts


def config_opts(state, args=None, hf_config=None):
    """state: a converted DetrPanoptic state dict. Returns config options as a flat
    ["KEY", "VALUE", ...] list (Detectron2's ``opts``) that build a model this state fits."""
    queries, hidden = state["query_embed.weight"].shape
    opts = [
        "MODEL.MASK_ON", str(any(k.startswith("mask_head.") for k in state)),
        "MODEL.DETR.NUM_CLASSES", str(state["class_embed.weight"].shape[0] - 1),
        "MODEL.DETR.NUM_OBJECT_QUERIES", str(queries),
        "MODEL.DETR.HIDDEN_DIM", str(hidden),
        "MODEL.DETR.DIM_FEEDFORWARD", str(state["transformer.encoder.layers.0.ffn.linear1.weight"].shape[0]),
        "MODEL.DETR.ENC_LAYERS", str(_count(state, r"transformer\.encoder\.layers\.(\d+)\.")),
        "MODEL.DETR.DEC_LAYERS", str(_count(state, r"transformer\.decoder\.layers\.(\d+)\.")),
        "MODEL.DETR.PRE_NORM", str("transformer.encoder.norm.weight" in state),
    ]
    if "position_encoding.row_embed.weight" in state:
        opts += ["MODEL.DETR.POSITION_EMBEDDING", "learned"]
    return opts + _resnet_opts(state) + _training_opts(args, hf_config)
