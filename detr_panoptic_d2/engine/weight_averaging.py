"""An exponential moving average (EMA) of the weights during training (SOLVER.EMA; LazyConfig
``train.ema``), as a Detectron2 hook.

``WeightAveraging`` keeps ``torch.optim.swa_utils.AveragedModel`` of the (unwrapped, under
DDP) model with ``get_ema_multi_avg_fn(decay)`` and ``use_buffers=True``: after every step,
every parameter and buffer (BatchNorm statistics included) moves to ``decay x average +
(1 - decay) x current``; the first step copies the model. The training itself is unchanged.

- evaluation: ``evaluate_beside`` runs an evaluation function on the raw weights and on the
  averaged ones; the averaged model's metrics are logged under ``ema/`` (``ema/panoptic_seg/PQ``),
  the raw ones under their usual names;
- checkpoints: the average is saved in every checkpoint under "ema" and restored by
  ``--resume``;
- deployment (``deploy``): at the end of training ``model_final.pth`` holds the averaged
  weights under "model" (what evaluation, the demo and the exporter load) and the raw ones under
  "raw_model", which resuming from it puts back into the model, so a longer schedule continues
  the raw run.

Under DDP every process averages its own copy; with Detectron2's unsynchronized BatchNorm the
buffers differ between processes as the raw model's do, and process 0's are saved.
"""
from detectron2.engine import HookBase
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class _RawWeights:
    """Checkpointable "raw_model": empty, except in a checkpoint written by ``save_deployed``,
    where it holds the raw weights; loading it puts them into the model."""

    def __init__(self, module):
        self.module = module
        self.saved = None

    def state_dict(self):
        return self.saved or {}

    def load_state_dict(self, state):
        if state:
            self.module.load_state_dict(state)


class WeightAveraging(HookBase):
    """The EMA hook (see the module docstring).

    Args:
        model: the trained model, or its DistributedDataParallel wrapper (the module inside is
            averaged).
        decay: the EMA decay per step, in [0, 1] (SOLVER.EMA.DECAY); 0.999 averages over about
            the last 1000 steps.
        checkpointer: the run's checkpointer; the average is registered in it as "ema" (saved,
            and restored on resume). None: not saved.
        deploy: at the end of training, rewrite ``model_final`` with the averaged weights as
            the model (SOLVER.EMA.DEPLOY).
    """

    def __init__(self, model, decay, checkpointer=None, deploy=True):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"SOLVER.EMA.DECAY (train.ema.decay) must be in [0, 1], got {decay}")
        self.module = model.module if isinstance(model, DistributedDataParallel) else model
        self.averaged = AveragedModel(self.module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.checkpointer = checkpointer
        self.deploy = deploy
        self._raw = _RawWeights(self.module)
        if checkpointer is not None:
            checkpointer.add_checkpointable("ema", self.averaged)
            checkpointer.add_checkpointable("raw_model", self._raw)

    @property
    def averaged_model(self):
        """The model with the averaged weights (the same class as the trained one)."""
        return self.averaged.module

    def after_step(self):
        self.averaged.update_parameters(self.module)

    def after_train(self):
        if self.deploy and self.checkpointer is not None and self.trainer.iter + 1 >= self.trainer.max_iter:
            self.save_deployed("model_final")

    def save_deployed(self, name):
        """Writes checkpoint ``name`` with the averaged weights as "model" and the raw ones as
        "raw_model" (main process only); the model keeps its raw weights."""
        if not comm.is_main_process():
            return
        raw = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        self.module.load_state_dict(self.averaged_model.state_dict())
        self._raw.saved = raw
        try:
            self.checkpointer.save(name)
        finally:
            self._raw.saved = None
            self.module.load_state_dict(raw)


def evaluate_beside(evaluate, model, averaging):
    """An evaluation function for Detectron2's EvalHook: ``evaluate(model)`` and, when
    ``averaging`` (a WeightAveraging) is given, ``evaluate`` of its averaged model, whose
    results go under "ema". Returns the results dict."""

    def both():
        results = dict(evaluate(model) or {})
        if averaging is not None:
            results["ema"] = evaluate(averaging.averaged_model) or {}
        return results

    return both
