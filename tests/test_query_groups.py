"""Training-only query groups (Group DETR, MODEL.DETR.TRAIN_QUERY_GROUPS): each group is an
independent DETR in training, and inference is a plain DETR's."""
import pytest
import torch
from detectron2.modeling import build_model

from detr_panoptic_d2.checkpoint import DetrCheckpointer
from detr_panoptic_d2.checkpoint.frozen_detector import load_frozen_detector
from detr_panoptic_d2.modeling.detector_weights import detector_parameters

from .helpers import (
    assert_same_inference, keep_queries_, load_trained_into_plain, register_tiny_panoptic_metadata, tiny_cfg,
    tiny_model_with_every_output, two_labelled_images,
)

N = 10  # tiny_cfg's NUM_OBJECT_QUERIES


def _model(groups, mask_loss_all_groups=False, seed=0):
    return tiny_model_with_every_output(
        ["MODEL.DETR.TRAIN_QUERY_GROUPS", groups, "MODEL.DETR.MASK_LOSS_ALL_GROUPS", mask_loss_all_groups], seed
    )


@pytest.mark.parametrize("mask_loss_all_groups", [False, True], ids=["masks_first_group", "masks_all_groups"])
def test_losses_are_the_mean_over_groups_of_independent_detrs(mask_loss_all_groups):
    """Oracle: each group's queries alone in a plain (G = 1) DETR with the same weights; its
    losses, matched on its own, averaged over the groups, are the G-group model's."""
    grouped = _model(3, mask_loss_all_groups).train()
    losses = grouped(two_labelled_images())
    queries = torch.cat([grouped.query_embed.weight, grouped.training_queries.group_query_embed.weight]).detach()
    single = _model(1).train()
    single.load_state_dict(grouped.state_dict())
    per_group = []
    for g in range(3):
        with torch.no_grad():
            single.query_embed.weight.copy_(queries[g * N : (g + 1) * N])
        per_group.append({k: v.item() for k, v in single(two_labelled_images()).items()})
    assert losses.keys() == per_group[0].keys()
    for name, value in losses.items():
        if name in ("loss_mask", "loss_dice") and not mask_loss_all_groups:
            expected = per_group[0][name]
        else:
            expected = sum(p[name] for p in per_group) / 3
        assert value.item() == pytest.approx(expected, rel=1e-5), name
    # The groups really differ (else the mean would be any group's).
    assert per_group[0]["loss_giou"] != pytest.approx(per_group[1]["loss_giou"], rel=1e-3)


def test_a_group_gets_no_gradient_from_another_groups_losses():
    model = _model(3).train()
    inputs = two_labelled_images()
    images, padding_mask = model.preprocess_image(inputs)
    targets = model.prepare_targets(inputs, images)
    out = model.detect(images.tensor, padding_mask)
    assert out.logits.shape[2] == 3 * N
    first = slice(0, N)
    loss = 0
    for logits, boxes in zip(out.logits, out.boxes):  # every decoder layer, as with aux losses
        _, layer = model.criterion.layer_losses(logits[:, first], boxes[:, first], targets, 5.0)
        loss = loss + sum(layer.values())
    loss.backward()
    group_grad = model.training_queries.group_query_embed.weight.grad
    assert group_grad is not None and torch.count_nonzero(group_grad) == 0
    assert torch.count_nonzero(model.query_embed.weight.grad) > 0


def test_checkpoint_trained_with_groups_infers_identically_with_one_group(tmp_path):
    grouped = _model(3, seed=1)
    keep_queries_(grouped)  # every query predicts a class: masks are merged
    plain = _model(1, seed=2)
    load_trained_into_plain(grouped, plain, tmp_path)
    assert plain.training_queries is None
    for result in assert_same_inference(grouped, plain):
        assert {"panoptic_seg", "sem_seg", "instances"} <= result.keys() and len(result["instances"]) <= N


def test_stage_two_refuses_groups_and_accepts_a_stage_one_trained_with_them(tmp_path):
    DetrCheckpointer(_model(3), save_dir=str(tmp_path)).save("boxes")
    cfg = tiny_cfg(dataset=register_tiny_panoptic_metadata())
    boxes = str(tmp_path / "boxes.pth")
    cfg.MODEL.DETR.TRAIN_QUERY_GROUPS = 2
    with pytest.raises(ValueError, match="training-only queries with a frozen detector \\(MODEL.DETR.TRAIN_QUERY_GROUPS > 1"):
        load_frozen_detector(build_model(cfg), boxes)
    cfg.MODEL.DETR.TRAIN_QUERY_GROUPS = 1
    model = load_frozen_detector(build_model(cfg), boxes)
    assert not any(p.requires_grad for _, p in detector_parameters(model))
    cfg.MODEL.DETR.TRAIN_QUERY_GROUPS = 0
    with pytest.raises(ValueError, match="TRAIN_QUERY_GROUPS\\) must be >= 1, got 0"):
        build_model(cfg)


def test_a_checkpoint_with_the_former_training_only_keys_loads_under_the_present_ones(tmp_path):
    """Checkpoints written when the query groups, denoising queries and semantic head were
    attributes of the model itself (keys group_query_embed.*, denoising.*, encoder_semantic.*)
    load into their components."""
    opts = ["MODEL.DETR.TRAIN_QUERY_GROUPS", 2, "MODEL.DETR.DN.GROUPS", 2, "MODEL.DETR.ENCODER_SEMANTIC_WEIGHT", 1.0]
    trained, fresh = tiny_model_with_every_output(opts, seed=1), tiny_model_with_every_output(opts, seed=2)
    former = {"training_queries.group_query_embed.": "group_query_embed.", "training_queries.denoising.": "denoising.",
              "criterion.encoder_semantic.": "encoder_semantic."}
    state = {}
    for key, value in trained.state_dict().items():
        for new, old in former.items():
            key = old + key[len(new):] if key.startswith(new) else key
        state[key] = value
    assert {"group_query_embed.weight", "denoising.label_embed.weight", "encoder_semantic.classifier.weight"} <= state.keys()
    torch.save({"model": state}, tmp_path / "former.pth")
    checkpointer = DetrCheckpointer(fresh)
    checkpointer.load_complete(str(tmp_path / "former.pth"))
    assert not checkpointer.incompatible.unexpected_keys
    for key, value in trained.state_dict().items():
        # Exact by construction: a copy of the same tensors.
        assert torch.equal(fresh.state_dict()[key], value), key
