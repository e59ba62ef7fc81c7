#!/usr/bin/env python
"""Train or evaluate DETR panoptic models, Detectron2 style.

    tools/train_net.py --config-file configs/coco/detr_R50_boxes.yaml --num-gpus 8
    tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
    tools/train_net.py --config-file CONFIG --resume            # continue the last run
    tools/train_net.py --config-file CONFIG --num-gpus 2        # 2 processes (GLOO on CPU)
    tools/train_net.py --config-file CONFIG --eval-only --onnx exported/model.onnx   # PQ of an export
    tools/train_net.py --config-file CONFIG --register my_train JSON IMAGE_DIR PNG_DIR \
        DATASETS.TRAIN "('my_train',)" MODEL.DETR.NUM_CLASSES 7   # a COCO-panoptic split on disk
    tools/train_net.py --config-file OUTPUT_DIR/config.yaml --eval-only MODEL.WEIGHTS OUTPUT_DIR/model_final.pth
        # the saved config registers the split again (DATASETS.REGISTER)

Trailing KEY VALUE pairs override the config. The trainer is ``DetrTrainer``.
"""
from detectron2.engine import default_argument_parser, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from detr_panoptic_d2.checkpoint import DetrCheckpointer
from detr_panoptic_d2.data.user_datasets import add_register_argument
from detr_panoptic_d2.engine import DetrTrainer, setup
from detr_panoptic_d2.export.evaluate import evaluate_exported


def main(args):
    cfg = setup(args)
    if getattr(args, "onnx", None):
        return evaluate_exported(cfg, args.onnx)
    if args.eval_only:
        model = DetrTrainer.build_model(cfg)
        checkpointer = DetrCheckpointer(model, save_dir=cfg.OUTPUT_DIR, datasets=cfg.DATASETS.TEST)
        resume = args.resume and checkpointer.has_checkpoint()
        checkpointer.load_complete(checkpointer.get_checkpoint_file() if resume else cfg.MODEL.WEIGHTS)
        results = DetrTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = DetrTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def parse_args(argv=None):
    """Detectron2's default_argument_parser with --onnx and --register."""
    parser = add_register_argument(default_argument_parser())
    parser.add_argument(
        "--onnx", metavar="FILE", default=None,
        help="with --eval-only: evaluate this model.onnx (tools/export_model.py) run by onnxruntime; panoptic only",
    )
    args = parser.parse_args(argv)
    if args.onnx and not args.eval_only:
        parser.error("--onnx evaluates an exported model: add --eval-only")
    return args


if __name__ == "__main__":
    args = parse_args()
    print("Command Line Args:", args)
    launch(main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, args=(args,))
