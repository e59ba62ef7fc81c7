#!/usr/bin/env python
"""Train or evaluate DETR panoptic models from a LazyConfig (Python config), Detectron2 style.

    tools/lazyconfig_train_net.py --config-file configs/shapes/detr_R18_shapes.py
    tools/lazyconfig_train_net.py --config-file CONFIG --eval-only train.init_checkpoint=model_final.pth
    tools/lazyconfig_train_net.py --config-file CONFIG --resume            # continue the last run
    tools/lazyconfig_train_net.py --config-file CONFIG --num-gpus 2        # 2 processes (GLOO on CPU)
    tools/lazyconfig_train_net.py --config-file CONFIG --register my_train JSON IMAGE_DIR PNG_DIR \
        'dataloader.train.dataset.names=my_train' model.num_classes=7   # a COCO-panoptic split on disk

Trailing a.b=c pairs override the config (Detectron2's LazyConfig.apply_overrides). The loop
is detr_panoptic_d2.engine.lazy's: our optimizer, full-model clipping, evaluators, checkpointer.
"""
from detectron2.engine import default_argument_parser, launch

from detr_panoptic_d2.data.user_datasets import add_register_argument
from detr_panoptic_d2.engine.lazy import lazy_eval_only, lazy_setup, lazy_train


def main(args):
    cfg = lazy_setup(args)
    if args.eval_only:
        return lazy_eval_only(cfg, args.resume)
    return lazy_train(cfg, args.resume)


def parse_args(argv=None):
    """Detectron2's default_argument_parser with --register."""
    return add_register_argument(default_argument_parser()).parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    print("Command Line Args:", args)
    launch(main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, args=(args,))
