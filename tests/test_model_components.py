"""Steps 1-7 component by component: shapes and behaviour on tiny inputs."""
import itertools

import pytest
import torch
from detectron2.modeling import build_model
from torchvision.ops import box_convert

from detr_panoptic_d2.modeling import HungarianMatcher, PositionEmbeddingLearned, PositionEmbeddingSine, Transformer
from detr_panoptic_d2.modeling.backbone import downsample_mask
from detr_panoptic_d2.modeling.criterion import SetCriterion

from .helpers import keep_queries_, make_input, register_tiny_panoptic_metadata, tiny_cfg


def _padding_mask(sizes, padded):
    mask = torch.ones(len(sizes), *padded, dtype=torch.bool)
    for m, (h, w) in zip(mask, sizes):
        m[:h, :w] = False
    return mask


def test_padding_mask_reaches_the_transformer_at_its_stride():
    model = build_model(tiny_cfg()).eval()
    images, mask = model.preprocess_image([make_input(64, 96, with_targets=False), make_input(128, 32, with_targets=False)])
    with torch.no_grad():
        out = model.detect(images.tensor, mask)
    m = out.memory_mask
    assert model.in_feature == "res5" and m.shape == (2, 4, 3)
    # Image 0 is 64 x 96 inside a 128 x 96 batch: rows below 64 / 32 are padding.
    assert not m[0, :2].any() and m[0, 2:].all()
    assert not m[1, :, :1].any() and m[1, :, 1:].all()
    assert out.memory.shape == (2, 64, 4, 3)


def test_downsample_mask_is_nearest():
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, :, 6:] = True
    assert downsample_mask(mask, (4, 4))[0, 0].tolist() == [False, False, False, True]


def test_sine_encoding_ignores_padding_amount():
    enc = PositionEmbeddingSine(16)
    small = enc(_padding_mask([(3, 4)], (3, 4)))
    padded = enc(_padding_mask([(3, 4)], (5, 7)))
    assert small.shape == (1, 32, 3, 4)
    assert torch.allclose(small, padded[:, :, :3, :4])
    assert not torch.allclose(padded[:, :, 3:, :], padded[:, :, :2, :])


def test_learned_encoding_shape_and_limit():
    enc = PositionEmbeddingLearned(8, max_size=10)
    assert enc(_padding_mask([(3, 4)], (3, 4))).shape == (1, 16, 3, 4)
    with pytest.raises(ValueError, match="POSITION_EMBEDDING"):
        enc(_padding_mask([(3, 11)], (3, 11)))


@pytest.mark.parametrize("pre_norm", [False, True])
def test_transformer_outputs_every_layer_and_is_padding_invariant(pre_norm):
    torch.manual_seed(0)
    tr = Transformer(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=3, dim_feedforward=64, dropout=0.0, pre_norm=pre_norm)
    src = torch.randn(1, 32, 3, 4)
    queries = torch.randn(5, 32)
    pos_enc = PositionEmbeddingSine(16)
    mask = _padding_mask([(3, 4)], (3, 4))
    box_head = torch.nn.Linear(32, 4)
    hs, boxes, memory = tr(src, mask, queries, pos_enc(mask), box_head)
    assert hs.shape == (3, 1, 5, 32) and memory.shape == (1, 32, 3, 4) and boxes is None
    padded_src = torch.nn.functional.pad(src, (0, 3, 0, 2), value=7.0)
    padded_mask = _padding_mask([(3, 4)], (5, 7))
    hs_p, _, memory_p = tr(padded_src, padded_mask, queries, pos_enc(padded_mask), box_head)
    assert torch.allclose(hs, hs_p, atol=1e-5)
    assert torch.allclose(memory, memory_p[:, :, :3, :4], atol=1e-5)


def test_matcher_is_optimal_against_brute_force():
    torch.manual_seed(0)
    matcher = HungarianMatcher(1.0, 5.0, 2.0)
    logits = torch.randn(1, 5, 4)
    boxes = torch.rand(1, 5, 4) * 0.5 + 0.25
    targets = [{"labels": torch.tensor([0, 2, 1]), "boxes": torch.rand(3, 4) * 0.5 + 0.25}]
    (cost,) = matcher.cost_matrices(logits, boxes, targets)
    (pred_idx, tgt_idx) = matcher(logits, boxes, targets)[0]
    found = cost[pred_idx, tgt_idx].sum()
    best = min(sum(cost[p, t] for t, p in enumerate(perm)) for perm in itertools.permutations(range(5), 3))
    assert torch.isclose(found, torch.as_tensor(best))
    assert sorted(tgt_idx.tolist()) == [0, 1, 2]


def _criterion(num_classes=3):
    return SetCriterion(num_classes, HungarianMatcher(1.0, 5.0, 2.0))


def test_box_losses_vanish_on_perfect_predictions():
    crit = _criterion()
    tgt_boxes = torch.tensor([[0.3, 0.4, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])
    targets = [{"labels": torch.tensor([1, 2]), "boxes": tgt_boxes}]
    boxes = torch.tensor([[[0.5, 0.5, 0.1, 0.1], [0.7, 0.6, 0.3, 0.4], [0.3, 0.4, 0.2, 0.2]]])
    logits = torch.full((1, 3, 4), -10.0)
    logits[0, 0, 3] = logits[0, 1, 2] = logits[0, 2, 1] = 10.0
    indices, losses = crit.layer_losses(logits, boxes, targets, num_boxes=2)
    assert losses["loss_bbox"].item() == pytest.approx(0, abs=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(0, abs=1e-6)
    assert losses["loss_ce"].item() < 1e-3
    assert sorted(zip(indices[0][0].tolist(), indices[0][1].tolist())) == [(1, 1), (2, 0)]


def test_losses_without_targets_train_every_query_to_say_no_object():
    """An image without targets: the class loss is the mean over queries of -log p(no object)
    (all weights equal, so the 0.1 cancels), its gradient raises every no-object logit, and the
    box and mask losses are 0."""
    crit = _criterion()
    targets = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    logits = torch.tensor([[[2.0, 0.0, -1.0, 0.5], [0.0, 3.0, 1.0, -2.0], [1.0, 1.0, 1.0, 1.0]]], requires_grad=True)
    _, losses = crit.layer_losses(logits, torch.rand(1, 3, 4), targets, num_boxes=1)
    no_object = [torch.tensor(row).softmax(0)[-1].item() for row in logits[0].tolist()]
    expected = -sum(torch.log(torch.tensor(p)) for p in no_object) / 3
    assert losses["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-6)
    losses["loss_ce"].backward()
    assert (logits.grad[0, :, -1] < 0).all() and (logits.grad[0, :, :-1] > 0).all()
    # Exact by construction: predictions equal to the targets, and no objects, give zero losses.
    assert losses["loss_bbox"] == 0 and losses["loss_giou"] == 0
    masks = crit.mask_losses(torch.zeros(0, 4, 4), torch.zeros(0, 16, 16), num_boxes=1)
    assert masks["loss_mask"] == 0 and masks["loss_dice"] == 0


def test_mask_losses_are_low_for_right_masks_and_high_for_wrong():
    crit = _criterion()
    target = torch.zeros(1, 16, 16)
    target[0, 4:12, 4:12] = 1
    right = (target[:, ::4, ::4] * 2 - 1) * 20
    right = torch.nn.functional.interpolate(target[:, None], size=(4, 4), mode="area")[:, 0] * 40 - 20
    good = crit.mask_losses(right, target, 1)
    bad = crit.mask_losses(-right, target, 1)
    assert good["loss_dice"] < 0.3 < bad["loss_dice"]
    assert good["loss_mask"] < bad["loss_mask"]


def test_class_loss_weights_no_object():
    """Weighted mean of the per-query cross-entropies: the matched query's (class 0) counts 1,
    the unmatched query's (target no-object) counts 0.1, on non-uniform logits."""
    crit = SetCriterion(2, HungarianMatcher(), no_object_weight=0.1)
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    indices = [(torch.tensor([0]), torch.tensor([0]))]
    e = torch.exp(torch.tensor(1.0)).item()
    ce_matched = torch.log(torch.tensor(e**2 + 2)).item() - 2  # -log softmax(2, 0, 0)[0]
    ce_unmatched = torch.log(torch.tensor(2 + e)).item()  # -log softmax(0, 1, 0)[2]
    expected = (1.0 * ce_matched + 0.1 * ce_unmatched) / 1.1
    assert crit.class_loss(logits, targets, indices).item() == pytest.approx(expected, rel=1e-6)


def test_mask_head_on_subset_equals_rows_of_all_queries():
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).eval()
    images, mask = model.preprocess_image([make_input(64, 96, with_targets=False), make_input(96, 64, seed=1, with_targets=False)])
    with torch.no_grad():
        out = model.detect(images.tensor, mask)
        n = out.logits.shape[2]
        every_b = torch.arange(2).repeat_interleave(n)
        every_q = torch.arange(n).repeat(2)
        full = model.segment(out, every_b, every_q)
        b = torch.tensor([1, 0, 1])
        q = torch.tensor([7, 3, 0])
        part = model.segment(out, b, q)
    assert full.shape == (2 * n, 24, 24)
    assert torch.allclose(part, full[b * n + q], atol=1e-5)


def test_forward_backward_reaches_mask_head_and_outputs_are_in_original_size():
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    model.train()
    batch = [make_input(64, 96, classes=(1, 3)), make_input(96, 80, classes=(0,), seed=1)]
    losses = model(batch)
    assert {"loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "loss_ce_0"} <= set(losses)
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        if p.requires_grad and (name.startswith("mask_head.") or name.startswith("transformer.")):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.mask_head.fpn.mask_predictor.weight.grad.abs().sum() > 0


def test_batch_without_any_target_trains():
    model = build_model(tiny_cfg())
    model.train()
    losses = model([make_input(64, 64, classes=()), make_input(64, 80, classes=(), seed=2)])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_box_only_model_has_no_mask_head_and_gives_instances():
    from detectron2.data import MetadataCatalog

    cfg = tiny_cfg(num_classes=133, mask_on=False, dataset="coco_2017_val_panoptic")
    model = build_model(cfg)
    assert model.mask_head is None
    assert "loss_mask" not in model.train()([make_input(64, 64, classes=(2,))])
    model.eval()
    with torch.no_grad():
        (result,) = model([make_input(50, 70, with_targets=False)])
    assert set(result) == {"instances"}
    inst = result["instances"]
    things = set(MetadataCatalog.get("coco_2017_val_panoptic").thing_dataset_id_to_contiguous_id.values())
    assert inst.image_size == (50, 70) and not inst.has("pred_masks")
    assert set(inst.pred_classes.tolist()) <= things


def test_box_only_model_rejects_panoptic_output():
    cfg = tiny_cfg(mask_on=False)
    cfg.MODEL.DETR.TEST.PANOPTIC_ON = True
    with pytest.raises(ValueError, match="MASK_ON"):
        build_model(cfg)


def test_box_targets_are_normalized_cxcywh_of_the_unpadded_image():
    model = build_model(tiny_cfg())
    batch = [make_input(64, 96, classes=(1, 2)), make_input(128, 48, classes=(0,), seed=1)]
    images, _ = model.preprocess_image(batch)
    targets = model.prepare_targets(batch, images)
    expected = box_convert(batch[0]["instances"].gt_boxes.tensor, "xyxy", "cxcywh") / torch.tensor([96, 64, 96, 64])
    assert torch.allclose(targets[0]["boxes"], expected)
    assert targets[0]["masks"].shape == (2, 128, 96) and not targets[0]["masks"][:, 64:].any()


def test_inference_outputs_in_original_size_with_consistent_segments():
    from detectron2.data import MetadataCatalog

    torch.manual_seed(0)
    cfg = tiny_cfg(num_classes=133, dataset="coco_2017_val_panoptic")
    cfg.MODEL.DETR.TEST.OBJECT_SCORE_THRESH = 0.0
    cfg.MODEL.DETR.TEST.INSTANCES_ON = True
    cfg.MODEL.DETR.TEST.SEMANTIC_ON = True
    model = build_model(cfg).eval()
    keep_queries_(model)  # no query says "no object": all 10 are kept
    # The network sees 64 x 96 and 80 x 48 images of originals 128 x 192 and 40 x 24.
    batch = [make_input(64, 96, with_targets=False), make_input(80, 48, seed=1, with_targets=False)]
    batch[0].update(height=128, width=192)
    batch[1].update(height=40, width=24)
    with torch.no_grad():
        results = model(batch)
    meta = MetadataCatalog.get("coco_2017_val_panoptic")
    things = set(meta.thing_dataset_id_to_contiguous_id.values())
    for x, r in zip(batch, results):
        seg, info = r["panoptic_seg"]
        assert seg.shape == (x["height"], x["width"])
        assert info, "every query is kept, some segment must survive"
        assert sorted(seg.unique().tolist()) == sorted(s["id"] for s in info)
        for s in info:
            assert s["isthing"] == (s["category_id"] in things)
            assert s["area"] == int((seg == s["id"]).sum())
        assert r["sem_seg"].shape == (133, x["height"], x["width"])
        assert r["instances"].image_size == (x["height"], x["width"])
        assert r["instances"].pred_masks.shape[1:] == (x["height"], x["width"])


def test_inference_without_kept_queries_is_void():
    cfg = tiny_cfg(num_classes=133, dataset="coco_2017_val_panoptic")
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.class_embed.bias[-1] = 10.0  # every query says "no object"
        (result,) = model([make_input(40, 40, with_targets=False)])
    seg, info = result["panoptic_seg"]
    assert info == [] and (seg == 0).all() and seg.shape == (40, 40)


def test_inference_refuses_non_finite_predictions():
    cfg = tiny_cfg(num_classes=133, dataset="coco_2017_val_panoptic")
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.class_embed.weight[0, 0] = float("nan")
        with pytest.raises(FloatingPointError, match="synthetic_3.png"):
            model([make_input(40, 40, seed=3, with_targets=False)])


def test_channels_last_backbone_gives_the_same_losses_and_outputs():
    """MODEL.DETR.CHANNELS_LAST changes the memory layout only: losses, gradients, class and box
    predictions and mask logits equal the default layout's up to float rounding."""
    cfg = tiny_cfg(dataset=register_tiny_panoptic_metadata())
    torch.manual_seed(0)
    plain = build_model(cfg)
    cfg.MODEL.DETR.CHANNELS_LAST = True
    fast = build_model(cfg)
    fast.load_state_dict(plain.state_dict())
    assert fast.backbone.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    inputs = [make_input(64, 96, (0, 2), seed=1), make_input(80, 64, (1,), seed=2)]
    losses = [model.train()(inputs) for model in (plain, fast)]
    for name, value in losses[0].items():
        assert losses[1][name].item() == pytest.approx(value.item(), rel=1e-4, abs=1e-6), name
    sum(losses[0].values()).backward()
    sum(losses[1].values()).backward()
    grad = fast.backbone.res4[0].conv1.weight.grad  # a trained layer (the stem is frozen)
    assert torch.allclose(grad, plain.backbone.res4[0].conv1.weight.grad, rtol=1e-3, atol=1e-6)
    outs = []
    for model in (plain.eval(), fast.eval()):
        with torch.no_grad():
            images, padding_mask = model.preprocess_image(inputs)
            out = model.detect(images.tensor, padding_mask)
            every = torch.arange(2).repeat_interleave(10), torch.arange(10).repeat(2)
            outs.append((out.logits, out.boxes, model.segment(out, *every)))
    for x, y in zip(*outs):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-4)
