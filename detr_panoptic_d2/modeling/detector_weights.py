"""DetrPanoptic's detector (everything but the mask head) and its training-only parts.

- ``drop_unused_training_weights`` (a load-state-dict pre-hook of the model): a checkpoint
  with or without the training-only parts (query groups, denoising queries, the encoder's
  semantic head) loads into any model, and one written when those parts were attributes of
  the model itself loads under their present names;
- ``freeze_detector``: stage 2 of the paper's recipe, the detector frozen so that only the
  mask head trains (its weights are loaded by checkpoint/frozen_detector.py);
  ``keep_detector_in_eval`` in training.
"""
import logging

# State-dict prefixes of the parts used in training only: the queries of groups 2..G and the
# denoising queries (TrainingQueries), the encoder's dense semantic head (in the criterion).
TRAINING_ONLY = ("training_queries.", "criterion.encoder_semantic.")
# Where those parts were kept before they were components: old prefix -> present prefix.
FORMER_PREFIXES = {
    "group_query_embed.": "training_queries.group_query_embed.",
    "denoising.": "training_queries.denoising.",
    "encoder_semantic.": "criterion.encoder_semantic.",
}


def drop_unused_training_weights(model, state_dict, prefix, *args):
    """Load-state-dict pre-hook (see the module docstring): renames former keys, then drops
    training-only weights that ``model`` has no part for (e.g. TRAIN_QUERY_GROUPS 1,
    ENCODER_SEMANTIC_WEIGHT 0, DN.GROUPS 0), which its inference does not use."""
    for key in list(state_dict):
        for old, new in FORMER_PREFIXES.items():
            if key.startswith(prefix + old):
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
    own = model.state_dict().keys()
    unused = [k for k in state_dict if k.startswith(tuple(prefix + p for p in TRAINING_ONLY)) and k[len(prefix):] not in own]
    for key in unused:
        del state_dict[key]
    if unused:
        logging.getLogger(__name__).info("Checkpoint has training-only weights %s; this model does not use them", unused)


def detector_parameters(model):
    """(name, parameter) of everything of ``model`` but its mask head: what stage 2 freezes."""
    return [(n, p) for n, p in model.named_parameters() if not n.startswith("mask_head.")]


def freeze_detector(model):
    """Freezes the detector of ``model`` (no gradients, eval mode in training, mask losses
    only); ValueError when the model has training-only parts, which train the detector."""
    if model.training_queries is not None:
        raise ValueError(
            "training-only queries with a frozen detector (MODEL.DETR.TRAIN_QUERY_GROUPS > 1 or MODEL.DETR.DN.GROUPS "
            "> 0, with MODEL.DETR.FROZEN_WEIGHTS): they train the decoder, which a frozen detector does not; use 1 "
            "group and DN.GROUPS 0 for the mask stage"
        )
    if model.criterion.encoder_semantic is not None:
        raise ValueError(
            "encoder_semantic_weight > 0 with a frozen detector (MODEL.DETR.ENCODER_SEMANTIC_WEIGHT, FROZEN_WEIGHTS): "
            "the loss trains the encoder, which a frozen detector does not; set it to 0 for the mask stage"
        )
    for _, p in detector_parameters(model):
        p.requires_grad_(False)
    model.frozen_detector = True
    model.train(model.training)


def keep_detector_in_eval(model):
    """Puts every child of ``model`` but its mask head in eval mode, so that a frozen detector's
    BatchNorm statistics do not drift and the mask head trains on the detector's inference-time
    outputs (the reference keeps its dropout on; with FrozenBN that is the only difference)."""
    for name, module in model.named_children():
        if name != "mask_head":
            module.train(False)


def reinitialize(*modules):
    """Re-draws the initial weights of each given module (None skipped), in order: every
    submodule's ``reset_parameters``, as its construction draws them (DetrPanoptic draws its
    training-only parts' weights in its own layer order)."""
    for module in modules:
        for m in () if module is None else module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
