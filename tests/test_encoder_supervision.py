"""The training-only dense semantic loss on the encoded image (MODEL.DETR.ENCODER_SEMANTIC_WEIGHT):
its value against a cell-by-cell restatement, what it trains, and that inference is a plain
DETR's."""
import math

import pytest
import torch
from detectron2.modeling import build_model

from detr_panoptic_d2.checkpoint import DetrCheckpointer
from detr_panoptic_d2.checkpoint.frozen_detector import load_frozen_detector
from detr_panoptic_d2.modeling.encoder_supervision import EncoderSemanticLoss, class_shares

from .helpers import (
    assert_same_inference, keep_queries_, load_trained_into_plain, make_input, register_tiny_panoptic_metadata, tiny_cfg,
)


def _model(weight, seed=0):
    cfg = tiny_cfg(dataset=register_tiny_panoptic_metadata())
    cfg.MODEL.DETR.ENCODER_SEMANTIC_WEIGHT = weight
    cfg.MODEL.DETR.TEST.SEMANTIC_ON = True
    torch.manual_seed(seed)
    return build_model(cfg)


def test_class_shares_of_a_hand_drawn_image():
    """A 4 x 6 image on a 2 x 2 grid (cells of 2 x 3 pixels): class 1 fills the top-left cell
    and one pixel of the top-right one, class 0 the bottom row; the rest is unlabeled."""
    masks = torch.zeros(2, 4, 6, dtype=torch.bool)
    masks[0, 0:2, 0:3] = True
    masks[0, 0, 3] = True
    masks[1, 2:4, :] = True
    shares = class_shares(torch.tensor([1, 0]), masks, (3, 2, 2))
    expected = torch.zeros(3, 2, 2)
    expected[1, 0, 0] = 1.0
    expected[1, 0, 1] = 1 / 6
    expected[0, 1, :] = 1.0
    assert torch.allclose(shares, expected)


def test_loss_equals_the_cell_by_cell_cross_entropy():
    """Oracle: for every non-padding cell, count each class's pixels in the cell's block, and
    take -sum_k (count_k / pixels) log softmax_k, with Python floats; the mean over those cells
    times the weight is the loss. Two images, one with padding cells, two labels on one class."""
    torch.manual_seed(0)
    d, k, h, w, s = 8, 4, 3, 4, 2  # cells of s x s pixels
    head = EncoderSemanticLoss(d, k, weight=2.5)
    memory = torch.randn(2, d, h, w)
    memory_mask = torch.zeros(2, h, w, dtype=torch.bool)
    memory_mask[1, :, 3:] = True  # image 1 has a padded last column
    targets = []
    for _ in range(2):
        owner = torch.randint(-1, 3, (h * s, w * s))  # -1: unlabeled
        labels = torch.tensor([2, 0, 2])
        targets.append({"labels": labels, "masks": torch.stack([owner == i for i in range(3)])})
    loss = head(memory, memory_mask, targets)["loss_encoder_semantic"]

    logits = head.classifier(memory)
    total, cells = 0.0, 0
    for b, t in enumerate(targets):
        for i in range(h):
            for j in range(w):
                if memory_mask[b, i, j]:
                    continue
                z = logits[b, :, i, j].tolist()
                log_z = math.log(sum(math.exp(v) for v in z))
                block = t["masks"][:, i * s:(i + 1) * s, j * s:(j + 1) * s]
                for segment, label in enumerate(t["labels"].tolist()):
                    share = block[segment].sum().item() / (s * s)
                    total -= share * (z[label] - log_z)
                cells += 1
    assert cells == 2 * h * w - h
    assert loss.item() == pytest.approx(2.5 * total / cells, rel=1e-5)


def test_loss_trains_backbone_and_encoder_only():
    """The loss reaches the backbone, the input projection and the encoder, and not the
    decoder, the queries or the heads (it reads the encoded image only)."""
    model = _model(1.0).train()
    inputs = [make_input(64, 96, (0, 2, 4), seed=1), make_input(80, 64, (1, 3), seed=2)]
    loss = model(inputs)["loss_encoder_semantic"]
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}  # not the frozen stem
    grads = torch.autograd.grad(loss, list(named.values()), allow_unused=True)
    reached = {n for n, g in zip(named, grads) if g is not None and g.abs().sum() > 0}
    for prefix in ("backbone.", "input_proj.", "transformer.encoder.", "criterion.encoder_semantic.classifier."):
        assert any(n.startswith(prefix) for n in reached), prefix
    for prefix in ("transformer.decoder.", "query_embed.", "class_embed.", "bbox_embed.", "mask_head."):
        assert not any(n.startswith(prefix) for n in reached), prefix


def test_off_by_default_and_refused_with_a_frozen_detector(tmp_path):
    model = _model(0.0)
    assert model.criterion.encoder_semantic is None
    assert "loss_encoder_semantic" not in model.train()([make_input(64, 96, (0, 2), seed=1)])
    DetrCheckpointer(model, save_dir=str(tmp_path)).save("boxes")
    cfg = tiny_cfg(dataset=register_tiny_panoptic_metadata())
    cfg.MODEL.DETR.ENCODER_SEMANTIC_WEIGHT = 1.0
    with pytest.raises(ValueError, match=r"encoder_semantic_weight > 0 with a frozen detector \(MODEL.DETR.ENCODER_SEMANTIC_WEIGHT"):
        load_frozen_detector(build_model(cfg), str(tmp_path / "boxes.pth"))


def test_checkpoint_trained_with_it_infers_identically_without_it(tmp_path):
    supervised = _model(2.0, seed=1)
    keep_queries_(supervised)  # every query predicts a class: masks are merged
    assert any(k.startswith("criterion.encoder_semantic.") for k in supervised.state_dict())
    plain = _model(0.0, seed=2)
    load_trained_into_plain(supervised, plain, tmp_path)
    assert plain.criterion.encoder_semantic is None
    for result in assert_same_inference(supervised, plain):
        assert "sem_seg" in result
