#!/usr/bin/env python
r"""FLOPs, activations, parameters and structure of a config's model, with fvcore (Detectron2's
tool, for DETR panoptic configs, yaml or LazyConfig).

    python tools/analyze_model.py --config-file configs/shapes/detr_R18_shapes.yaml \
        --tasks flop parameter --num-inputs 4
    python tools/analyze_model.py --config-file configs/coco/detr_R50_panoptic.yaml \
        --tasks flop activation --input-size 800 1066 --all-queries

flop / activation: counted on --num-inputs images of DATASETS.TEST[0] (dataloader.test) through
the test mapper, or on random images of --input-size H W (no dataset needed), in inference
mode; mean and spread over the inputs, the per-module table of the first. The mask head runs
on the kept queries only (those above MODEL.DETR.TEST.OBJECT_SCORE_THRESH; random weights keep
few), so its FLOPs follow the weights: --all-queries counts it on all N, as the reference
implementation runs it (detr_panoptic_d2.testing.run_mask_head_on_all_queries).
Attention (scaled_dot_product_attention, baddbmm) is counted too; fvcore skips element-wise ops.
parameter: the per-module table (depth 5). structure: the model printed. MODEL.WEIGHTS
(train.init_checkpoint) is loaded when set. Trailing KEY VALUE pairs (LazyConfig: a.b=c)
override the config; --register adds a split on disk.
"""
import argparse
import collections
import itertools
import logging
import sys

import numpy as np
import torch
from detectron2.export import TracingAdapter
from detectron2.utils.analysis import _IGNORED_OPS, parameter_count_table
from detectron2.utils.logger import setup_logger
from fvcore.nn import ActivationCountAnalysis, FlopCountAnalysis, flop_count_table
from fvcore.nn.jit_handles import get_shape
from tqdm import tqdm

from detr_panoptic_d2.checkpoint import DetrCheckpointer
from detr_panoptic_d2.data.user_datasets import add_register_argument
from detr_panoptic_d2.engine.any_config import load_any_config
from detr_panoptic_d2.testing import run_mask_head_on_all_queries

logger = logging.getLogger("detr_panoptic_d2")
TASKS = ("flop", "activation", "parameter", "structure")


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", choices=TASKS, required=True, nargs="+", help="what to report")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    parser.add_argument("--num-inputs", type=int, default=100, help="images to average flop/activation over (%(default)s)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="random images of this size (after the test-time resize) instead of the test dataset's")
    parser.add_argument("--all-queries", action="store_true",
                        help="flop/activation: the mask head on all N queries, as the reference runs it, "
                        "instead of on the kept ones")
    add_register_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config options: KEY VALUE pairs")
    return parser


def _inputs(config, args):
    """--num-inputs model inputs (lists of one dict): random images or the test loader's."""
    if args.input_size is None:
        return itertools.islice(config.test_loader(config.test_names[0]), args.num_inputs)
    height, width = args.input_size
    generator = torch.Generator().manual_seed(0)
    return (
        [{"image": torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator),
          "height": height, "width": width}]
        for _ in range(args.num_inputs)
    )


def attention_flop_jit(inputs, outputs):
    """FLOPs (one per multiply-add, fvcore's convention) of aten::scaled_dot_product_attention:
    q (..., L, E), k (..., S, E), v (..., S, Ev) -> L x S x E for q k^T plus L x S x Ev for
    the weighted sum of v, per batch and head."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = int(np.prod(q[:-2]))
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def baddbmm_flop_jit(inputs, outputs):
    """FLOPs of aten::baddbmm (input + batch1 @ batch2): those of the product, B x N x M x P."""
    b, n, m = get_shape(inputs[1])
    return b * n * m * get_shape(inputs[2])[-1]


# Attention operators fvcore does not count by default (nn.MultiheadAttention uses them).
EXTRA_HANDLES = {"aten::scaled_dot_product_attention": attention_flop_jit, "aten::baddbmm": baddbmm_flop_jit}


def run_keeping_every_step(model, inputs):
    """model(inputs), plus the class and box heads' outputs and the mask head's mask logits
    when the model has them: with no query kept the panoptic output is constant, and tracing
    would drop every step before it (and, with --all-queries, the masks of unused queries)."""
    captured = []
    heads = [getattr(model, name, None) for name in ("class_embed", "bbox_embed", "mask_head")]

    def capture(module, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    handles = [head.register_forward_hook(capture) for head in heads if head is not None]
    try:
        return model(inputs), captured
    finally:
        for handle in handles:
            handle.remove()


def traced(analysis, model, inputs):
    """fvcore's ``analysis`` class (FlopCountAnalysis, ActivationCountAnalysis) of a Detectron2
    model on ``inputs`` (a list of dicts), through Detectron2's TracingAdapter, with the
    operators Detectron2 ignores ignored and the attention ones counted."""
    wrapper = TracingAdapter(model, inputs, inference_func=run_keeping_every_step, allow_non_tensor=True)
    result = analysis(wrapper, wrapper.flattened_inputs).set_op_handle(**{k: None for k in _IGNORED_OPS})
    return result.set_op_handle(**EXTRA_HANDLES) if analysis is FlopCountAnalysis else result


def _model(config, all_queries=False):
    """The config's model in eval mode, its weights loaded when set; with ``all_queries``, its
    mask head run on all N queries (``--all-queries``)."""
    model = config.build_model()
    weights = config.cfg.train.init_checkpoint if config.lazy else config.cfg.MODEL.WEIGHTS
    if weights:
        DetrCheckpointer(model).load(weights)
    if all_queries:
        if getattr(model, "mask_head", None) is None:
            raise SystemExit("--all-queries: the model has no mask head (MODEL.MASK_ON False)")
        run_mask_head_on_all_queries(model)
    return model.eval()


@torch.no_grad()
def do_flop(config, args):
    """Prints the FLOP table of the first input and the mean total; returns {"gflops": per input,
    "flops_by_operator": mean per operator}."""
    model = _model(config, args.all_queries)
    totals, by_operator, first = [], collections.Counter(), None
    for index, data in enumerate(tqdm(_inputs(config, args), total=args.num_inputs, desc="flop", unit="img")):
        flops = traced(FlopCountAnalysis, model, data)
        if index > 0:
            flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        by_operator += flops.by_operator()
        totals.append(flops.total() / 1e9)
        first = first or flop_count_table(flops, max_depth=5)
    print("Flops table computed from only one input sample:\n" + first)
    print("Average GFlops for each type of operators:\n" + str([(k, v / len(totals) / 1e9) for k, v in by_operator.items()]))
    print(f"Total GFlops: {np.mean(totals):.3f}±{np.std(totals):.3f}")
    return {"gflops": totals, "flops_by_operator": {k: v / len(totals) for k, v in by_operator.items()}}


@torch.no_grad()
def do_activation(config, args):
    """Prints the mean activation count (millions); returns {"mactivations": [...]}."""
    model = _model(config, args.all_queries)
    totals, by_operator = [], collections.Counter()
    for data in tqdm(_inputs(config, args), total=args.num_inputs, desc="activation", unit="img"):
        count = {k: v / 1e6 for k, v in traced(ActivationCountAnalysis, model, data).by_operator().items()}
        by_operator += count
        totals.append(sum(count.values()))
    print("(Million) Activations for Each Type of Operators:\n" + str([(k, v / len(totals)) for k, v in by_operator.items()]))
    print(f"Total (Million) Activations: {np.mean(totals):.3f}±{np.std(totals):.3f}")
    return {"mactivations": totals}


def do_parameter(config, args):
    """Prints the parameter table; returns {"parameters": total count}."""
    model = config.build_model()
    print("Parameter count:\n" + parameter_count_table(model, max_depth=5))
    return {"parameters": sum(p.numel() for p in model.parameters())}


def do_structure(config, args):
    model = config.build_model()
    print("Model Structure:\n" + str(model))
    return {}


def main(argv=None):
    args = get_parser().parse_args(argv)
    if args.num_inputs < 1:
        raise SystemExit(f"--num-inputs must be at least 1, got {args.num_inputs}")
    setup_logger(name="fvcore")
    setup_logger(name="detr_panoptic_d2")
    config = load_any_config(args.config_file, args.opts, args.register)
    results = {}
    for task in args.tasks:
        results.update(globals()[f"do_{task}"](config, args))
    return results


if __name__ == "__main__":
    main()
