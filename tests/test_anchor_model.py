"""DetrPanoptic with the anchor-box decoder (MODEL.DETR.DECODER "anchor"): it builds from yaml
and trains a step with every training-only part on, starts each layer from its anchor,
round-trips through a checkpoint into a model without the training-only parts, and refuses a
vanilla checkpoint and (not yet supported) the ONNX export with clear errors."""
import pytest
import torch
from detectron2.modeling import build_model

from detr_panoptic_d2.checkpoint import DetrCheckpointer
from detr_panoptic_d2.export import export_onnx
from detr_panoptic_d2.modeling import AnchorTransformer

from .helpers import (
    assert_same_inference,
    keep_queries_,
    load_trained_into_plain,
    make_input,
    register_tiny_panoptic_metadata,
    tiny_cfg,
    two_labelled_images,
)

ANCHOR = ["MODEL.DETR.DECODER", "anchor", "MODEL.DETR.MASK_HEAD.BOX_AWARE", "True"]
TRAINING_AIDS = ["MODEL.DETR.DN.GROUPS", "2", "MODEL.DETR.DN.NEGATIVES", "True", "MODEL.DETR.TRAIN_QUERY_GROUPS", "2"]


def _model(opts=(), seed=0):
    cfg = tiny_cfg(dataset=register_tiny_panoptic_metadata())
    cfg.merge_from_list(ANCHOR + list(opts))
    torch.manual_seed(seed)
    return cfg, build_model(cfg)


def test_every_layer_starts_from_its_anchor_and_refines_it():
    """DAB-DETR's initialization: the box head's last layer is zero, so every layer's box is its
    anchor (the first layer's: the learned anchor queries); once the head predicts offsets,
    layer i+1 starts from layer i's refined box."""
    _, model = _model()
    assert isinstance(model.transformer, AnchorTransformer) and model.query_embed.weight.shape == (10, 4)
    images, padding = model.eval().preprocess_image([make_input(64, 96, with_targets=False)])
    with torch.no_grad():
        out = model.detect(images.tensor, padding)
        anchors = model.query_embed.weight.sigmoid()
        # Tolerance: inverse_sigmoid clamps at 1e-5, sigmoid rounds.
        torch.testing.assert_close(out.boxes, anchors.expand_as(out.boxes), rtol=0, atol=1e-5)
        torch.nn.init.normal_(model.bbox_embed.layers[-1].weight, std=0.1)
        out = model.detect(images.tensor, padding)
    assert (out.boxes[1] - out.boxes[0]).abs().max() > 1e-3  # the layers move the boxes


def test_trains_a_step_with_every_training_aid_and_infers_as_a_plain_model(tmp_path):
    _, model = _model(TRAINING_AIDS)
    losses = model.train()(two_labelled_images())
    assert {"loss_ce_dn", "loss_bbox_dn", "loss_giou_dn", "loss_ce_dn_0", "loss_mask", "loss_dice"} <= losses.keys()
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    for name in ("query_embed.weight", "mask_head.attention_map.q_pos_linear.weight", "training_queries.denoising.label_embed.weight"):
        assert grads[name].abs().sum() > 0, name
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    keep_queries_(model)
    _, plain = _model(seed=1)
    load_trained_into_plain(model, plain, tmp_path)
    assert plain.training_queries is None
    assert_same_inference(model, plain)


def test_export_is_refused_naming_the_decoder(tmp_path):
    cfg, model = _model()
    with pytest.raises(NotImplementedError, match=r"MODEL.DETR.DECODER 'anchor'"):
        export_onnx(cfg, model.eval(), str(tmp_path))


def test_a_vanilla_checkpoint_is_refused_naming_the_decoder(tmp_path):
    cfg = tiny_cfg(dataset=register_tiny_panoptic_metadata())
    DetrCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("vanilla")
    _, model = _model()
    with pytest.raises(ValueError, match=r"query_embed.weight.*MODEL.DETR.DECODER"):
        DetrCheckpointer(model).load_complete(str(tmp_path / "vanilla.pth"))
