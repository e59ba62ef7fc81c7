# `train` of the LazyConfigs, read by tools/lazyconfig_train_net.py (Detectron2's
# configs/common/train.py layout); values as Base-DETR-Panoptic.yaml's.
train = dict(
    output_dir="./output",
    # Weights loaded before training (or evaluated with --eval-only); "" = from scratch.
    init_checkpoint="",
    # Stage 2 of the paper's recipe: a box-only checkpoint whose detector is loaded and frozen,
    # so that only the mask head trains (as MODEL.DETR.FROZEN_WEIGHTS); "" = nothing frozen.
    frozen_weights="",
    max_iter=90000,
    amp=dict(enabled=False),  # Detectron2's AMPTrainer on GPUs; bfloat16 autocast in the model on the CPU
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=100),
    eval_period=0,  # 0: evaluate at the end only
    log_period=20,
    device="cuda",  # falls back to "cpu" when CUDA is unavailable
    seed=-1,
    # An EMA of the weights, evaluated beside them and deployed in model_final.pth (as SOLVER.EMA).
    ema=dict(enabled=False, decay=0.999, deploy=True),
)
