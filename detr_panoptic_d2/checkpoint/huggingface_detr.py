"""HuggingFace ``DetrForSegmentation`` / ``DetrForObjectDetection`` -> the official DETR layout.

HuggingFace's DETR is a port of the official model with other names, and two generations of
them: transformers 4.x (the hub checkpoints: ``detr.model.backbone.conv_encoder.model.*`` timm
backbone, ``self_attn.out_proj``, ``fc1``, ``bbox_attention.q_linear``, ``mask_head.lay1``) and
5.x (``detr.model.backbone.model.*``, ``o_proj``, ``mlp.fc1``, ``bbox_attention.q_proj``,
``mask_head.conv1.conv``, ``fpn_stages.N``). Both are renamed to the official layout here, the
separate q/k/v projections packed into nn.MultiheadAttention's ``in_proj_weight`` (q, k, v
order); ``official_detr.official_to_d2`` then does the rest.
"""
import torch

from .renaming import compile_rules, rename_state, strip_detr_prefix
from .resnet_names import any_resnet_to_torchvision

_WB = r"(weight|bias)"
_LAYER = r"model\.(encoder|decoder)\.layers\.(\d+)"
# HuggingFace's attention modules -> the official ones.
_ATTENTION = {"self_attn": "self_attn", "encoder_attn": "multihead_attn"}
# HuggingFace's per-layer LayerNorms -> the official norm1..3, by layer kind.
_NORMS = {
    ("encoder", "self_attn_layer_norm"): "norm1",
    ("encoder", "final_layer_norm"): "norm2",
    ("decoder", "self_attn_layer_norm"): "norm1",
    ("decoder", "encoder_attn_layer_norm"): "norm2",
    ("decoder", "final_layer_norm"): "norm3",
}


def _backbone(match):
    name = any_resnet_to_torchvision(match[1])
    return None if name is None else f"backbone.0.body.{name}"


def _attention(match, param):
    return f"transformer.{match[1]}.layers.{match[2]}.{_ATTENTION[match[3]]}.{param}"


def _norm(match):
    norm = _NORMS.get((match[1], match[3]))
    return None if norm is None else f"transformer.{match[1]}.layers.{match[2]}.{norm}.{match[4]}"


_RULES = compile_rules(
    [
        (r"model\.backbone\.(?:conv_encoder\.)?model\.(.+)", _backbone),
        (r"model\.(?:backbone\.)?position_embedding\.row_embeddings\.weight", "backbone.1.row_embed.weight"),
        (r"model\.(?:backbone\.)?position_embedding\.column_embeddings\.weight", "backbone.1.col_embed.weight"),
        (rf"model\.input_projection\.{_WB}", r"input_proj.\1"),
        (r"model\.query_position_embeddings\.weight", "query_embed.weight"),
        # q/k/v keep a temporary name until they are packed (see _pack_attention).
        (rf"{_LAYER}\.(self_attn|encoder_attn)\.([qkv])_proj\.{_WB}", lambda m: _attention(m, f"{m[4]}_proj.{m[5]}")),
        (
            rf"{_LAYER}\.(self_attn|encoder_attn)\.(?:out_proj|o_proj)\.{_WB}",
            lambda m: _attention(m, f"out_proj.{m[4]}"),
        ),
        (rf"{_LAYER}\.(?:mlp\.)?fc([12])\.{_WB}", r"transformer.\1.layers.\2.linear\3.\4"),
        (rf"{_LAYER}\.(\w+_layer_norm)\.{_WB}", _norm),
        (rf"model\.decoder\.layernorm\.{_WB}", r"transformer.decoder.norm.\1"),
        (rf"class_labels_classifier\.{_WB}", r"class_embed.\1"),
        (rf"bbox_predictor\.layers\.(\d)\.{_WB}", r"bbox_embed.layers.\1.\2"),
        (rf"bbox_attention\.([qk])_(?:linear|proj)\.{_WB}", r"bbox_attention.\1_linear.\2"),
        (rf"mask_head\.(lay[1-5]|gn[1-5]|adapter[1-3]|out_lay)\.{_WB}", r"\g<0>"),
        (rf"mask_head\.conv([12])\.conv\.{_WB}", r"mask_head.lay\1.\2"),
        (rf"mask_head\.conv([12])\.norm\.{_WB}", r"mask_head.gn\1.\2"),
        (rf"mask_head\.fpn_stages\.([012])\.fpn_adapter\.{_WB}", lambda m: f"mask_head.adapter{int(m[1]) + 1}.{m[2]}"),
        (rf"mask_head\.fpn_stages\.([012])\.refine\.conv\.{_WB}", lambda m: f"mask_head.lay{int(m[1]) + 3}.{m[2]}"),
        (rf"mask_head\.fpn_stages\.([012])\.refine\.norm\.{_WB}", lambda m: f"mask_head.gn{int(m[1]) + 3}.{m[2]}"),
        (rf"mask_head\.output_conv\.{_WB}", r"mask_head.out_lay.\1"),
    ]
)


def _pack_attention(state, source):
    """Replaces every ``<attn>.{q,k,v}_proj.{weight,bias}`` triple by ``<attn>.in_proj_{weight,bias}``."""
    out = {}
    pending = {}
    for key, value in state.items():
        stem, dot, param = key.rpartition(".")
        if stem.endswith(("q_proj", "k_proj", "v_proj")):
            attn, which = stem[: -len(".q_proj")], stem[-6]
            pending.setdefault((attn, param), {})[which] = value
        else:
            out[key] = value
    for (attn, param), parts in pending.items():
        if sorted(parts) != ["k", "q", "v"]:
            raise KeyError(f"{source}: {attn} has only the {sorted(parts)} projections' {param}; q, k and v are needed")
        out[f"{attn}.in_proj_{param}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def huggingface_to_official(state, source="HuggingFace DETR checkpoint"):
    """state: a HuggingFace DETR state dict (either generation). Returns it in the official layout
    (no ``detr.`` prefix). ``num_batches_tracked`` counters are dropped."""
    state = strip_detr_prefix(state)
    return _pack_attention(rename_state(state, _RULES, source), source)
