#!/usr/bin/env python
"""PQ of a trained model at several object score thresholds, to choose
MODEL.DETR.TEST.OBJECT_SCORE_THRESH on data that is neither trained on nor the test set.

    tools/dev/sweep_score_threshold.py --config-file configs/shapes/detr_R18_shapes.yaml \
        --dataset shapes_panoptic_tune --thresholds 0.2 0.3 0.4 0.5 0.6 0.7 \
        --opts MODEL.WEIGHTS output/shapes/detr_R18_shapes/model_final.pth

Loads MODEL.WEIGHTS once, evaluates the panoptic output on --dataset (default
shapes_panoptic_tune, a held-out draw of the shapes training distribution) at each threshold,
prints PQ / PQ things / PQ stuff per threshold and the best one. KEY VALUE pairs after --opts
override the config. Returns {threshold: panoptic metrics}.
"""
import argparse

from detectron2.evaluation import inference_on_dataset

from detr_panoptic_d2.checkpoint import DetrCheckpointer
from detr_panoptic_d2.data.user_datasets import add_register_argument
from detr_panoptic_d2.engine import DetrTrainer, setup
from detr_panoptic_d2.engine.evaluators import build_panoptic_evaluator


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--dataset", default="shapes_panoptic_tune", help="registered panoptic dataset")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85])
    add_register_argument(parser)
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config options: KEY VALUE pairs")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    opts = list(args.opts) + [
        "DATASETS.TEST", f"('{args.dataset}',)",
        "MODEL.DETR.TEST.INSTANCES_ON", "False",
        "MODEL.DETR.TEST.SEMANTIC_ON", "False",
    ]
    cfg = setup(
        argparse.Namespace(config_file=args.config_file, opts=opts, eval_only=True, resume=False, register=args.register)
    )
    model = DetrTrainer.build_model(cfg)
    DetrCheckpointer(model, datasets=[args.dataset]).load_complete(cfg.MODEL.WEIGHTS)
    loader = DetrTrainer.build_test_loader(cfg, args.dataset)
    results = {}
    for threshold in args.thresholds:
        model.postprocessor.object_score_thresh = threshold
        # No output folder: the evaluator's files go to a temporary one of its own, so that
        # sweeps of one config can run side by side without reading each other's predictions.
        evaluator = build_panoptic_evaluator(cfg, args.dataset, None)
        results[threshold] = inference_on_dataset(model, loader, evaluator)["panoptic_seg"]
    rows = [f"{'threshold':>9} {'PQ':>6} {'PQ_th':>6} {'PQ_st':>6}"]
    rows += [f"{t:>9.2f} {r['PQ']:>6.1f} {r['PQ_th']:>6.1f} {r['PQ_st']:>6.1f}" for t, r in results.items()]
    best = max(results, key=lambda t: results[t]["PQ"])
    print(f"Panoptic quality on {args.dataset} by MODEL.DETR.TEST.OBJECT_SCORE_THRESH:")
    print("\n".join(rows))
    print(f"best: {best} (PQ {results[best]['PQ']:.1f})")
    return results


if __name__ == "__main__":
    main()
