"""The reference DETR for the tests: a small random HuggingFace ``DetrForSegmentation`` (a
faithful port of the official model) and its weights in the official and legacy key layouts.

The HuggingFace model mirrors ``helpers.tiny_cfg()`` exactly: HuggingFace's ResNet with basic
blocks, depths (2, 2, 2, 2), widths 64..512 and a 64-channel stem is Detectron2's R18 with
RES2_OUT_CHANNELS 64; d = 64, 8 heads, 2 + 2 layers, FFN 128, 10 queries.
"""
import re

import torch
from torch import nn
from transformers import DetrConfig, DetrForObjectDetection, DetrForSegmentation, ResNetConfig
from transformers.conversion_mapping import get_checkpoint_conversion_mapping

from detr_panoptic_d2.testing import recentre_on_queries_


def tiny_hf_detr(num_labels=5, masks=True, seed=0, bottleneck=False, position_embedding="sine"):
    """A random DetrForSegmentation (or DetrForObjectDetection when ``masks`` is False) of the
    tiny_cfg() size, in eval mode, with every tensor redrawn by ``randomize_``. ``bottleneck``
    swaps the R18 backbone for an R50 one (bottleneck blocks, stride in the 3x3 conv, as
    torchvision and Detectron2's STRIDE_IN_1X1 False); ``position_embedding``: "sine" or "learned"."""
    backbone = ResNetConfig(
        layer_type="bottleneck" if bottleneck else "basic",
        depths=[3, 4, 6, 3] if bottleneck else [2, 2, 2, 2],
        hidden_sizes=[256, 512, 1024, 2048] if bottleneck else [64, 128, 256, 512],
        embedding_size=64,
        downsample_in_bottleneck=False,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=backbone,
        d_model=64,
        encoder_attention_heads=8,
        decoder_attention_heads=8,
        encoder_layers=2,
        decoder_layers=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        num_queries=10,
        num_labels=num_labels,
        dropout=0.0,
        position_embedding_type=position_embedding,
    )
    model = (DetrForSegmentation if masks else DetrForObjectDetection)(config).eval()
    randomize_(model, seed)
    return model


@torch.no_grad()
def randomize_(model, seed):
    """Redraws every parameter and buffer: weights ~ N(0, 1/fan_in), embeddings ~ N(0, 1), norm
    scales ~ U(0.75, 1.25), biases and BatchNorm means ~ N(0, 0.1), BatchNorm variances ~
    U(0.5, 1.5). No identity BatchNorm or zero bias is left to hide a misplaced tensor. The
    decoder's attention logits are sharpened (q and k weights x2) so the queries attend to
    different places, as a trained model's do."""
    g = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        if name.endswith("embeddings.weight"):
            t.copy_(torch.randn(t.shape, generator=g))
        elif t.dim() > 1:
            t.copy_(torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)
        elif name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        elif name.endswith("weight"):
            t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
        else:
            t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    detector = model.detr if isinstance(model, DetrForSegmentation) else model
    for layer in detector.model.decoder.layers:
        for attention in (layer.self_attn, layer.encoder_attn):
            attention.q_proj.weight.mul_(2)
            attention.k_proj.weight.mul_(2)


@torch.no_grad()
def separate_queries_(model, pixel_values, pixel_mask, spread=3.0):
    """Makes the queries' classes and masks differ on this input, as a trained model's do.

    A random decoder gives box embeddings that share a large common part, so every query would
    predict the same class and attention map. The class head and the attention map's query
    projection are re-centred on the mean box embedding of this input and scaled so that their
    outputs vary by ``spread`` (standard deviation) across queries; the mask head's weights on
    the attention-map channels are scaled up so the maps shape the masks. Only weights change:
    the model stays a valid DETR."""
    out = model(pixel_values=pixel_values, pixel_mask=pixel_mask)
    linears = (model.detr.class_labels_classifier, model.bbox_attention.q_proj)
    recentre_on_queries_(out.last_hidden_state.flatten(0, 1), linears, spread)
    model.mask_head.conv1.conv.weight[:, model.config.d_model :].mul_(300)


def _copy(state, prefix, module):
    for name, t in module.state_dict().items():
        state[f"{prefix}.{name}"] = t.clone()


def official_state(model):
    """The state dict the official DETR code (facebookresearch/detr) holds for the same weights,
    built by walking the HuggingFace modules: torchvision ResNet names under
    ``backbone.0.body``, nn.MultiheadAttention with packed q, k, v, ``mask_head.lay1..`` etc.
    The segmentation model's detector keys carry the ``detr.`` prefix, as in the official
    panoptic checkpoints; a DetrForObjectDetection gives the box-only layout (no prefix)."""
    segmentation = isinstance(model, DetrForSegmentation)
    detector = model.detr if segmentation else model
    p = "detr." if segmentation else ""
    state = {}
    body = detector.model.backbone.model
    _copy(state, f"{p}backbone.0.body.conv1", body.embedder.embedder.convolution)
    _copy(state, f"{p}backbone.0.body.bn1", body.embedder.embedder.normalization)
    for i, stage in enumerate(body.encoder.stages):
        for j, block in enumerate(stage.layers):
            prefix = f"{p}backbone.0.body.layer{i + 1}.{j}"
            for k, conv in enumerate(block.layer):
                _copy(state, f"{prefix}.conv{k + 1}", conv.convolution)
                _copy(state, f"{prefix}.bn{k + 1}", conv.normalization)
            if not isinstance(block.shortcut, nn.Identity):
                _copy(state, f"{prefix}.downsample.0", block.shortcut.convolution)
                _copy(state, f"{prefix}.downsample.1", block.shortcut.normalization)
    _copy(state, f"{p}input_proj", detector.model.input_projection)
    _copy(state, f"{p}query_embed", detector.model.query_position_embeddings)
    for kind in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(detector.model, kind).layers):
            prefix = f"{p}transformer.{kind}.layers.{i}"
            attentions = {"self_attn": layer.self_attn}
            norms = [layer.self_attn_layer_norm, layer.final_layer_norm]
            if kind == "decoder":
                attentions["multihead_attn"] = layer.encoder_attn
                norms.insert(1, layer.encoder_attn_layer_norm)
            for name, attention in attentions.items():
                for param in ("weight", "bias"):
                    qkv = [getattr(getattr(attention, f"{x}_proj"), param) for x in "qkv"]
                    state[f"{prefix}.{name}.in_proj_{param}"] = torch.cat(qkv).clone()
                _copy(state, f"{prefix}.{name}.out_proj", attention.o_proj)
            _copy(state, f"{prefix}.linear1", layer.mlp.fc1)
            _copy(state, f"{prefix}.linear2", layer.mlp.fc2)
            for k, norm in enumerate(norms):
                _copy(state, f"{prefix}.norm{k + 1}", norm)
    _copy(state, f"{p}transformer.decoder.norm", detector.model.decoder.layernorm)
    _copy(state, f"{p}class_embed", detector.class_labels_classifier)
    _copy(state, f"{p}bbox_embed", detector.bbox_predictor)
    if segmentation:
        _copy(state, "bbox_attention.q_linear", model.bbox_attention.q_proj)
        _copy(state, "bbox_attention.k_linear", model.bbox_attention.k_proj)
        head = model.mask_head
        for k, block in enumerate((head.conv1, head.conv2)):
            _copy(state, f"mask_head.lay{k + 1}", block.conv)
            _copy(state, f"mask_head.gn{k + 1}", block.norm)
        for k, stage in enumerate(head.fpn_stages):
            _copy(state, f"mask_head.adapter{k + 1}", stage.fpn_adapter)
            _copy(state, f"mask_head.lay{k + 3}", stage.refine.conv)
            _copy(state, f"mask_head.gn{k + 3}", stage.refine.norm)
        _copy(state, "mask_head.out_lay", head.output_conv)
    return state


def legacy_hub_state(model):
    """The weights as a transformers 4.x hub checkpoint (facebook/detr-resnet-50-panoptic) names
    them: timm (= torchvision) backbone names under ``detr.model.backbone.conv_encoder.model``,
    ``out_proj``, ``fc1``, ``bbox_attention.q_linear``, ``mask_head.lay1``... The non-backbone
    renames are transformers' own legacy mapping (its conversion_mapping), applied in reverse."""
    renames = []
    for owner in ("DetrModel", "DetrForSegmentation"):
        for rule in get_checkpoint_conversion_mapping(owner):
            old, new = rule.source_patterns[0], rule.target_patterns[0]
            pattern = re.escape(new).replace(re.escape("\\1"), r"(\d+)")
            renames.append((pattern, old.replace(r"(\d+)", r"\1")))
    torchvision = {k[len("detr.backbone.0.body.") :]: v for k, v in official_state(model).items() if ".body." in k}
    state = {f"detr.model.backbone.conv_encoder.model.{k}": v for k, v in torchvision.items()}
    for key, value in model.state_dict().items():
        if key.startswith("detr.model.backbone."):
            continue
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        state[key] = value.clone()
    return state


def blocky_image(height, width, seed, cell=32):
    """A uint8 3 x H x W image of random colours in ``cell``-pixel squares: unlike pixel noise,
    it gives res5 cells features that differ, so queries find different things to attend to."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, 256, (3, -(-height // cell), -(-width // cell)), generator=g, dtype=torch.uint8)
    return cells.repeat_interleave(cell, 1).repeat_interleave(cell, 2)[:, :height, :width].contiguous()
