"""End to end on a tiny shapes split: tools/train_net.py trains and evaluates, the two-stage
recipe keeps the detector, --resume continues the schedule, and 2-process DDP runs on CPU."""
import glob
import hashlib
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import HookBase, default_argument_parser, hooks, launch
from detectron2.modeling import build_model
from detectron2.utils import comm

from detr_panoptic_d2.checkpoint import DetrCheckpointer, load_model_state
from detr_panoptic_d2.engine import DetrTrainer
from detr_panoptic_d2.modeling import HungarianMatcher
from detr_panoptic_d2.modeling.criterion import SetCriterion

from .helpers import load_tool, make_input, register_tiny_shapes, tiny_cfg, tiny_training_cfg, write_cfg


def _painted_input(classes, seed):
    """make_input's 64 x 64 image and rectangles, each rectangle painted its own colour."""
    x = make_input(64, 64, classes=classes, seed=seed)
    for i, mask in enumerate(x["instances"].gt_masks.tensor):
        x["image"][:, mask] = torch.tensor([255 * (i % 2), 60 * i, 255 - 80 * i], dtype=torch.uint8)[:, None]
    return x


@torch.no_grad()
def _matched_mask_ious(model, batch):
    """IoU of each target mask with the mask (logits > 0, at the padded size) of the query the
    Hungarian matcher gives it, in batch order."""
    images, padding = model.preprocess_image(batch)
    targets = model.prepare_targets(batch, images)
    out = model.detect(images.tensor, padding)
    indices = model.criterion.matcher(out.logits[-1], out.boxes[-1], targets)
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    logits = model.segment(out, batch_idx, torch.cat([src for src, _ in indices]))
    masks = F.interpolate(logits[:, None], size=images.tensor.shape[-2:], mode="bilinear")[:, 0] > 0
    truth = torch.cat([t["masks"][tgt] for t, (_, tgt) in zip(targets, indices)])
    return ((masks & truth).sum((1, 2)) / (masks | truth).sum((1, 2))).tolist()


def test_thirty_iterations_overfit_two_images():
    """The model learns: 30 AdamW steps (lr 1e-3) on the same two images (two painted rectangles,
    and one rectangle as wide as the image) lower the total loss and the mask losses (focal + dice) by 15%,
    and the single rectangle's matched mask goes from IoU < 0.5 to > 0.8 (the mean over the three
    from < 0.35 to > 0.55)."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).train()
    batch = [_painted_input((1, 3), seed=0), _painted_input((2,), seed=1)]
    ious_before = _matched_mask_ious(model, batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(30):
        losses = model(batch)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append((total.item(), losses["loss_mask"].item() + losses["loss_dice"].item()))
    (first_total, first_mask), (last_total, last_mask) = history[0], history[-1]
    assert last_total < 0.85 * first_total
    assert last_mask < 0.85 * first_mask
    ious_after = _matched_mask_ious(model, batch)
    assert ious_before[2] < 0.5 and ious_after[2] > 0.8
    assert sum(ious_before) / 3 < 0.35 and sum(ious_after) / 3 > 0.55


def _eval_only(train_net, cfg_file, weights, *opts):
    args = ["--config-file", cfg_file, "--eval-only", "MODEL.WEIGHTS", str(weights), *opts]
    return train_net.main(default_argument_parser().parse_args(args))


@pytest.mark.slow
def test_train_net_trains_then_evaluates_pq_ap_miou(tiny_shapes, tmp_path):
    cfg_file = write_cfg(tiny_training_cfg(*tiny_shapes, tmp_path / "run"), tmp_path / "cfg.yaml")
    train_net = load_tool("train_net")
    results = train_net.main(default_argument_parser().parse_args(["--config-file", cfg_file]))
    assert {"PQ", "SQ", "RQ", "PQ_th", "PQ_st"} <= set(results["panoptic_seg"])
    assert "AP" in results["bbox"] and "AP" in results["segm"]
    assert "mIoU" in results["sem_seg"]
    for task, key in [("panoptic_seg", "PQ"), ("panoptic_seg", "SQ"), ("panoptic_seg", "RQ"), ("sem_seg", "mIoU")]:
        assert math.isfinite(results[task][key]), (task, key, results[task][key])
    final = tmp_path / "run" / "model_final.pth"
    assert os.path.isfile(final)
    assert os.path.isfile(tmp_path / "run" / "metrics.json")

    # --eval-only reloads the whole model from MODEL.WEIGHTS and ignores FROZEN_WEIGHTS.
    again = _eval_only(train_net, cfg_file, final, "MODEL.DETR.FROZEN_WEIGHTS", str(tmp_path / "no_such_stage1.pth"))
    assert again["panoptic_seg"]["PQ"] == results["panoptic_seg"]["PQ"]
    assert again["sem_seg"]["mIoU"] == results["sem_seg"]["mIoU"]

    # After 3 iterations no query may predict a thing (AP is then NaN: "no predictions"); with
    # the class head biased towards thing class 0 every query is a detection.
    state = torch.load(final, weights_only=True)
    state["model"]["class_embed.bias"][0] += 20.0
    torch.save(state, tmp_path / "things.pth")
    detections = _eval_only(train_net, cfg_file, tmp_path / "things.pth")
    for task in ("bbox", "segm"):
        assert math.isfinite(detections[task]["AP"]), (task, detections[task])


@pytest.mark.slow
def test_stage_two_trains_only_the_mask_head_and_keeps_the_detector(tiny_shapes, tmp_path):
    train, _ = tiny_shapes
    stage1 = DetrTrainer(tiny_training_cfg(train, None, tmp_path / "boxes", mask_on=False, max_iter=2))
    stage1.resume_or_load(resume=False)
    stage1.train()
    boxes = load_model_state(str(tmp_path / "boxes" / "model_final.pth"))

    cfg = tiny_training_cfg(train, None, tmp_path / "masks", mask_on=True, max_iter=2)
    cfg.MODEL.DETR.FROZEN_WEIGHTS = str(tmp_path / "boxes" / "model_final.pth")
    stage2 = DetrTrainer(cfg)
    held = {id(p) for g in stage2.optimizer.param_groups for p in g["params"]}
    assert held == {id(p) for p in stage2.model.mask_head.parameters()}
    initial_head = {k: v.clone() for k, v in stage2.model.mask_head.state_dict().items()}
    stage2.resume_or_load(resume=False)
    stage2.train()

    final = load_model_state(str(tmp_path / "masks" / "model_final.pth"))
    detector = {k: v for k, v in final.items() if not k.startswith("mask_head.")}
    assert detector.keys() == boxes.keys()
    for name, value in detector.items():
        # Exact by construction: frozen weights are never updated, no arithmetic.
        assert torch.equal(value, boxes[name]), name
    assert any(not torch.equal(final["mask_head." + k], v) for k, v in initial_head.items())


class _Interrupt(Exception):
    pass


class _StopAt(HookBase):
    """Raises after iteration ``stop`` finished (a crash between two checkpoints)."""

    def __init__(self, stop):
        self.stop = stop

    def after_step(self):
        if self.trainer.iter == self.stop:
            raise _Interrupt


class _RecordLR(HookBase):
    def __init__(self):
        self.steps = []

    def before_step(self):
        self.steps.append((self.trainer.iter, max(g["lr"] for g in self.trainer.optimizer.param_groups)))


@pytest.mark.slow
def test_resume_continues_at_the_saved_iteration_and_schedule(tiny_shapes, tmp_path):
    train, _ = tiny_shapes
    cfg = tiny_training_cfg(train, None, tmp_path, max_iter=6)
    cfg.MODEL.DETR.TRAIN_QUERY_GROUPS = 3  # the training-only queries are saved and restored too
    cfg.SOLVER.BASE_LR = 1e-3
    cfg.SOLVER.STEPS = (4,)
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    first = DetrTrainer(cfg)
    first.register_hooks([_StopAt(4)])
    first.resume_or_load(resume=False)
    with pytest.raises(_Interrupt):
        first.train()
    assert not os.path.exists(tmp_path / "model_final.pth")
    saved = torch.load(tmp_path / "model_0000003.pth", weights_only=False)

    second = DetrTrainer(cfg)
    record = _RecordLR()
    second.register_hooks([record])
    second.resume_or_load(resume=True)
    assert second.start_iter == 4
    assert "training_queries.group_query_embed.weight" in saved["model"]
    for name, value in second.model.state_dict().items():
        # Exact by construction: resumed tensors and optimizer state are copies of the saved ones.
        assert torch.equal(value, saved["model"][name]), name
    # AdamW's step counts and moments are those of iteration 3, not a fresh optimizer's.
    saved_moments = saved["trainer"]["_trainer"]["optimizer"]["state"]
    restored = second.optimizer.state_dict()["state"]
    assert saved_moments and restored.keys() == saved_moments.keys()
    for k, moments in saved_moments.items():
        assert restored[k]["step"].item() == 4
        for name, value in moments.items():
            assert torch.equal(restored[k][name], value), (k, name)
    assert second.scheduler.last_epoch == 4  # a fresh schedule is at 0
    second.train()
    # Iterations 4 and 5 ran, after the lr drop at 4 (the schedule was restored too).
    assert record.steps == [(4, pytest.approx(1e-4)), (5, pytest.approx(1e-4))]
    final = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert final["iteration"] == 5


def _ddp_worker(cfg_file, shapes_root, out_dir):
    """One rank of the 2-process run: trains, evaluates, and writes what it saw."""
    register_tiny_shapes(shapes_root, "shapes_tiny")
    seen = []

    class RecordingTrainer(DetrTrainer):
        @classmethod
        def build_train_loader(cls, cfg):
            loader = super().build_train_loader(cfg)

            def batches():
                for batch in loader:
                    seen.extend(os.path.basename(x["file_name"]) for x in batch)
                    yield batch

            return batches()

    train_net = load_tool("train_net")
    args = default_argument_parser().parse_args(["--config-file", cfg_file])
    cfg = train_net.setup(args)
    trainer = RecordingTrainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    model = trainer.model.module
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    with open(os.path.join(out_dir, f"rank{comm.get_rank()}.json"), "w") as f:
        json.dump({"seen": seen, "params": digest, "results": results}, f)


@pytest.mark.slow
@pytest.mark.parametrize("frozen_detector", [False, True], ids=["joint", "frozen_detector"])
def test_two_process_ddp_on_cpu(tiny_shapes, tiny_shapes_root, tmp_path, frozen_detector):
    cfg = tiny_training_cfg(*tiny_shapes, tmp_path / "run", max_iter=3)
    if frozen_detector:
        box_cfg = tiny_training_cfg(*tiny_shapes, tmp_path, mask_on=False)
        DetectionCheckpointer(build_model(box_cfg), save_dir=str(tmp_path)).save("boxes")
        cfg.MODEL.DETR.FROZEN_WEIGHTS = str(tmp_path / "boxes.pth")
    else:
        cfg.MODEL.DETR.TRAIN_QUERY_GROUPS = 3
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.MODEL.DETR.TEST.INSTANCES_ON = False
    cfg.MODEL.DETR.TEST.SEMANTIC_ON = False
    cfg_file = write_cfg(cfg, tmp_path / "cfg.yaml")
    launch(_ddp_worker, 2, dist_url="auto", args=(cfg_file, tiny_shapes_root, str(tmp_path)))
    ranks = []
    for r in range(2):
        with open(tmp_path / f"rank{r}.json") as f:
            ranks.append(json.load(f))
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 6  # 3 iterations x 2 images
    assert not set(ranks[0]["seen"]) & set(ranks[1]["seen"])
    assert ranks[0]["params"] == ranks[1]["params"]
    assert math.isfinite(ranks[0]["results"]["panoptic_seg"]["PQ"])
    with open(tmp_path / "run" / "inference" / tiny_shapes[1] / "predictions.json") as f:
        assert len(json.load(f)["annotations"]) == 4  # both ranks' predictions gathered
    # Rank 0 alone writes checkpoints and events; each rank keeps its own log.
    assert os.path.isfile(tmp_path / "run" / "model_final.pth")
    assert len(glob.glob(str(tmp_path / "run" / "events.out.tfevents.*"))) == 1
    assert os.path.isfile(tmp_path / "run" / "log.txt.rank1")
    if frozen_detector:
        boxes = load_model_state(str(tmp_path / "boxes.pth"))
        final = load_model_state(str(tmp_path / "run" / "model_final.pth"))
        # Exact by construction: frozen weights are never updated, no arithmetic.
        assert all(torch.equal(final[k], v) for k, v in boxes.items())


def _num_boxes_worker(out_dir):
    """One rank: 1 target segment on rank 0, 3 + 1 on rank 1; writes the criterion's normaliser."""
    counts = [1] if comm.get_rank() == 0 else [3, 1]
    targets = [{"labels": torch.zeros(n, dtype=torch.int64)} for n in counts]
    num_boxes = SetCriterion(3, HungarianMatcher()).num_boxes(targets, torch.device("cpu"))
    with open(os.path.join(out_dir, f"num_boxes{comm.get_rank()}.json"), "w") as f:
        json.dump(num_boxes, f)


@pytest.mark.slow
def test_box_normaliser_is_averaged_over_processes(tmp_path):
    """With 1 target segment on one process and 4 on the other, both divide their box and mask
    losses by the mean, 2.5 (DETR's num_boxes over GLOO), not by their own count."""
    launch(_num_boxes_worker, 2, dist_url="auto", args=(str(tmp_path),))
    for rank in range(2):
        with open(tmp_path / f"num_boxes{rank}.json") as f:
            assert json.load(f) == 2.5


def test_trainer_checkpoints_through_detr_checkpointer(tiny_shapes, tmp_path):
    """--resume and the periodic checkpoints go through DetrCheckpointer (atomic saves, safe
    loading), not the DetectionCheckpointer of DefaultTrainer's constructor."""
    trainer = DetrTrainer(tiny_training_cfg(tiny_shapes[0], None, tmp_path))
    periodic = [h for h in trainer._hooks if isinstance(h, hooks.PeriodicCheckpointer)]
    assert isinstance(trainer.checkpointer, DetrCheckpointer)
    assert [h.checkpointer for h in periodic] == [trainer.checkpointer]
