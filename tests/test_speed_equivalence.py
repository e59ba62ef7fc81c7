"""The speed-ups keep outputs: the mask head on used queries only gives the same panoptic
output, losses and gradients as on all queries (the reference's behaviour, made by
``run_mask_head_on_all_queries``), and the faster mask-head internals equal DETR's
formulation of them."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model

from detr_panoptic_d2.modeling.attention_map import MultiHeadAttentionMap
from detr_panoptic_d2.modeling.mask_head import FPNMaskHead, image_runs
from detr_panoptic_d2.modeling.postprocessing import select_queries
from detr_panoptic_d2.testing import (
    calibrate_kept_queries,
    as_reference,
    detr_fpn_formulation,
    fit_class_head,
    run_mask_head_on_all_queries,
    separate_query_masks_,
)

from detr_panoptic_d2.checkpoint.frozen_detector import load_frozen_detector

from .helpers import assert_same_panoptic, make_input, model_from_config_file, tiny_cfg


def _set_query_classes(model, batch, classes):
    """Rewrites the class head so that, in every image of ``batch``, query q confidently
    predicts ``classes[q]`` (an int, or None for no object): logits of 20 on the wanted class
    and 0 elsewhere. A random model keeps no query and gives all of them the same class."""
    no_object = model.class_embed.out_features - 1
    wanted = torch.tensor([no_object if c is None else c for c in classes]).repeat(len(batch))
    target = 20.0 * F.one_hot(wanted, model.class_embed.out_features).double()
    fit_class_head(model, batch, target.view(len(batch), len(classes), -1))
    with torch.no_grad():
        images, mask = model.preprocess_image(batch)
        for logits in model.detect(images.tensor, mask).logits[-1]:
            keep, _, predicted = select_queries(logits, model.postprocessor.object_score_thresh)
            assert keep.tolist() == [c is not None for c in classes]
            assert predicted[keep].tolist() == [c for c in classes if c is not None]


def _twin_models(tmp_path=None, frozen=False):
    """The same weights with the mask head on used queries (False) and on all (True); with
    ``frozen``, the detector loaded from a stage-1 file and frozen, as the trainers do."""
    cfg = tiny_cfg(num_classes=133, dataset="coco_2017_val_panoptic")
    torch.manual_seed(0)
    first = build_model(cfg)
    if frozen:
        torch.save({"model": first.state_dict()}, tmp_path / "detector.pth")
    models = {mode: build_model(cfg) for mode in (False, True)}
    for model in models.values():
        model.load_state_dict(first.state_dict())
        if frozen:
            load_frozen_detector(model, str(tmp_path / "detector.pth"))
    run_mask_head_on_all_queries(models[True])
    return models


class _Rows:
    def __init__(self, module):
        self.rows = 0
        module.register_forward_pre_hook(lambda m, args: setattr(self, "rows", self.rows + args[0].shape[0]))


def test_inference_on_kept_queries_equals_all_queries():
    models = _twin_models()
    # Two network sizes in one padded batch, each resized back to another original size.
    batch = [make_input(64, 96, with_targets=False), make_input(96, 72, seed=1, with_targets=False)]
    batch[0].update(height=80, width=120)
    batch[1].update(height=48, width=36)
    # Things (COCO contiguous ids < 80) and stuff, one stuff class twice (merged into one).
    classes = [1, None, 2, 100, None, 100, 110, None, 3, None]
    _set_query_classes(models[False], batch, classes)
    models[True].load_state_dict(models[False].state_dict())
    n = len(classes)
    rows = {mode: _Rows(model.mask_head) for mode, model in models.items()}
    with torch.no_grad():
        ours, reference = (models[mode].eval()(batch) for mode in (False, True))
    assert rows[False].rows == 2 * 6 and rows[True].rows == 2 * n
    for a, b in zip(ours, reference):
        categories = [s["category_id"] for s in a["panoptic_seg"][1]]
        assert len(categories) >= 3 and categories.count(100) <= 1, categories
        # Tolerance: the head runs on 6 or 10 rows per image, a batch size other kernels may round otherwise.
        assert_same_panoptic(a["panoptic_seg"], b["panoptic_seg"])


def _losses_and_grads(model, batch):
    model.train()
    torch.manual_seed(0)
    losses = model(batch)
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


@pytest.mark.parametrize("frozen", [False, True], ids=["whole-model", "frozen-detector"])
def test_training_on_matched_queries_equals_all_queries(tmp_path, frozen):
    models = _twin_models(tmp_path, frozen)
    batch = [make_input(64, 96, classes=(1, 3, 90, 100)), make_input(96, 72, classes=(0, 120, 7), seed=1)]
    rows = {mode: _Rows(model.mask_head) for mode, model in models.items()}
    (losses_a, grads_a), (losses_b, grads_b) = (_losses_and_grads(models[mode], batch) for mode in (False, True))
    assert rows[False].rows == 4 + 3 and rows[True].rows == 2 * models[True].query_embed.weight.shape[0]
    assert losses_a.keys() == losses_b.keys() and "loss_mask" in losses_a
    for k in losses_a:
        torch.testing.assert_close(losses_a[k], losses_b[k], rtol=1e-6, atol=1e-7, msg=k)
    assert grads_a.keys() == grads_b.keys()
    assert all(n.startswith("mask_head.") for n in grads_a) == frozen
    # Weight gradients sum over objects; extra zero-gradient objects only reorder that sum
    # (and how threads split it), which moves the last bits: a wrong row would move whole units.
    scale = max(g.abs().max().item() for g in grads_a.values())
    for k in grads_a:
        torch.testing.assert_close(grads_a[k], grads_b[k], rtol=1e-4, atol=1e-4 * scale, msg=k)


def test_attention_map_rows_do_not_depend_on_how_many_queries_run():
    torch.manual_seed(0)
    amap = MultiHeadAttentionMap(64, 64, 8)
    queries = torch.randn(20, 64)
    batch_idx = torch.tensor([0] * 9 + [1] * 11)
    memory, mask = torch.randn(2, 64, 5, 7), torch.zeros(2, 5, 7, dtype=torch.bool)
    mask[1, :, 5:] = True
    full = amap(queries, batch_idx, memory, mask)
    for t in range(1, 20):
        # Tolerance: t rows is another matmul shape; a row taken from another query would differ by far more.
        torch.testing.assert_close(amap(queries[-t:], batch_idx[-t:], memory, mask), full[-t:], rtol=1e-5, atol=1e-6, msg=str(t))
    # It is still q_linear, up to rounding.
    torch.testing.assert_close(amap._project_queries(queries), amap.q_linear(queries), rtol=1e-5, atol=1e-6)


def test_image_runs_cover_unsorted_batch_indices():
    assert image_runs(torch.tensor([0, 0, 2, 1, 1, 0])) == [(0, 0, 2), (2, 2, 3), (1, 3, 5), (0, 5, 6)]
    assert image_runs(torch.zeros(0, dtype=torch.long)) == []


def _fpn_inputs(batch_idx):
    """A small FPNMaskHead and its inputs (attention maps, batch_idx, projected res5, skips),
    the first and third requiring gradients."""
    torch.manual_seed(0)
    head = FPNMaskHead(64, 8, [48, 32, 16])
    with torch.no_grad():  # DETR initializes biases to zero: random ones would show if one were left out
        for conv in head.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.bias.normal_()
    maps = torch.randn(len(batch_idx), 8, 4, 5, requires_grad=True)
    projected = torch.randn(3, 64, 4, 5, requires_grad=True)
    skips = [torch.randn(3, 48, 8, 9), torch.randn(3, 32, 15, 18), torch.randn(3, 16, 30, 35)]
    return head, (maps, torch.tensor(batch_idx), projected, skips)


@pytest.mark.parametrize("batch_idx", [[0, 0, 1, 2, 2, 2], [2, 0, 2, 1, 0]], ids=["grouped", "unsorted"])
def test_fpn_head_equals_detr_formulation(batch_idx):
    """The head with its per-image work done once per image (in-place adds per run of rows,
    the split first convolution) against DETR's formulation (every per-image map gathered to
    the objects' rows, the first convolution over the concatenation): the same logits up to
    float rounding, in inference and under autograd, and the same gradients within 1e-5."""
    head, inputs = _fpn_inputs(batch_idx)
    with torch.no_grad():
        inference = head(*inputs)
    training = head(*inputs)
    gathered = detr_fpn_formulation(head, *inputs)
    assert torch.equal(inference, training)  # exact by construction: the same operations on the same inputs
    torch.testing.assert_close(training, gathered, rtol=1e-5, atol=1e-5 * gathered.abs().max().item())
    params = [inputs[0], inputs[2]] + list(head.parameters())  # maps, projected res5, weights
    grads = {
        name: torch.autograd.grad((logits * torch.linspace(-1, 1, logits.numel()).view_as(logits)).sum(), params)
        for name, logits in (("ours", training), ("detr", gathered))
    }
    # Tolerance scaled by the largest gradient: a conv bias before a one-channel-per-group
    # GroupNorm has zero gradient in exact arithmetic, so both sides are rounding noise there.
    scale = max(g.abs().max().item() for g in grads["detr"])
    for ours, detr in zip(grads["ours"], grads["detr"]):
        torch.testing.assert_close(ours, detr, rtol=1e-5, atol=1e-5 * scale)
    assert grads["detr"][0].abs().sum() > 0 and grads["detr"][1].abs().sum() > 0


@pytest.mark.slow
def test_r50_at_800x1066_split_first_convolution_gives_detrs_panoptic_output():
    """R50 at full size, 15 kept queries: the same panoptic output with the mask head's first
    convolution split as with DETR's convolution of the concatenation (``detr_fpn_formulation``),
    on the same weights (masks separated so that rounding cannot decide it)."""
    cfg, _ = model_from_config_file("configs/coco/detr_R50_panoptic.yaml")
    cfg.MODEL.DETR.TEST.INSTANCES_ON = cfg.MODEL.DETR.TEST.SEMANTIC_ON = False
    x = make_input(800, 1066, with_targets=False)
    torch.manual_seed(0)
    split = build_model(cfg).eval()
    separate_query_masks_(split, [x["image"]])
    calibrate_kept_queries(split, [x], 15)
    detr = build_model(cfg).eval()
    detr.load_state_dict(split.state_dict())
    as_reference(detr)
    with torch.no_grad():
        expected, actual = (model([x])[0]["panoptic_seg"] for model in (detr, split))
    assert len(expected[1]) >= 5
    assert_same_panoptic(expected, actual)
