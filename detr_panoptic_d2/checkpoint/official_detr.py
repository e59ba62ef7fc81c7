"""Official DETR checkpoints (facebookresearch/detr) -> this project's ``DetrPanoptic`` names.

The official layout (prefix ``detr.`` in the panoptic models, none in the box-only ones):
``backbone.0.body.*`` (torchvision ResNet), ``backbone.1.{row,col}_embed`` (learned position
encoding only), ``transformer.{encoder,decoder}.layers.N.{self_attn,multihead_attn,linear1,
linear2,norm1..3}`` (nn.MultiheadAttention, packed q,k,v as ours), ``transformer.decoder.norm``,
``class_embed``, ``bbox_embed.layers.N``, ``query_embed``, ``input_proj``; the panoptic models
add ``bbox_attention.{q,k}_linear`` and ``mask_head.{lay1..5,gn1..5,adapter1..3,out_lay}``.
"""
from .renaming import compile_rules, rename_state, strip_detr_prefix
from .resnet_names import torchvision_to_d2

_WB = r"(weight|bias)"
_ATTN_PARAM = r"(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)"
_LAYERS = r"transformer\.(encoder|decoder)\.layers\.(\d+)"
_DECODER = r"transformer\.decoder\.layers\.(\d+)"


def _backbone(match):
    name = torchvision_to_d2(match[1])
    return None if name is None else f"backbone.{name}"


_RULES = compile_rules(
    [
        (r"backbone\.0\.body\.(.+)", _backbone),
        (r"backbone\.1\.(row|col)_embed\.weight", r"position_encoding.\1_embed.weight"),
        (rf"{_LAYERS}\.linear([12])\.{_WB}", r"transformer.\1.layers.\2.ffn.linear\3.\4"),
        (rf"{_DECODER}\.multihead_attn\.{_ATTN_PARAM}", r"transformer.decoder.layers.\1.cross_attn.\2"),
        (rf"{_LAYERS}\.self_attn\.{_ATTN_PARAM}", r"\g<0>"),
        (rf"{_LAYERS}\.norm[123]\.{_WB}", r"\g<0>"),
        (rf"transformer\.(encoder|decoder)\.norm\.{_WB}", r"\g<0>"),
        (rf"(input_proj|query_embed|class_embed|bbox_embed\.layers\.\d)\.{_WB}", r"\g<0>"),
        (rf"bbox_attention\.([qk]_linear)\.{_WB}", r"mask_head.attention_map.\1.\2"),
        (rf"mask_head\.lay([12])\.{_WB}", r"mask_head.fpn.lay\1.0.\2"),
        (rf"mask_head\.gn([12])\.{_WB}", r"mask_head.fpn.lay\1.1.\2"),
        (rf"mask_head\.lay([345])\.{_WB}", lambda m: f"mask_head.fpn.refines.{int(m[1]) - 3}.0.{m[2]}"),
        (rf"mask_head\.gn([345])\.{_WB}", lambda m: f"mask_head.fpn.refines.{int(m[1]) - 3}.1.{m[2]}"),
        (rf"mask_head\.adapter([123])\.{_WB}", lambda m: f"mask_head.fpn.adapters.{int(m[1]) - 1}.{m[2]}"),
        (rf"mask_head\.out_lay\.{_WB}", r"mask_head.fpn.out_lay.\1"),
    ]
)


def official_to_d2(state, source="official DETR checkpoint"):
    """state: official DETR state dict (name -> tensor). Returns it under DetrPanoptic's names.

    ``num_batches_tracked`` counters (BatchNorm bookkeeping, no weights) are dropped; any other
    key the official layout does not have raises KeyError naming it."""
    state = strip_detr_prefix(state)
    return rename_state(state, _RULES, source)
