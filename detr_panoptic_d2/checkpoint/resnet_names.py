"""Backbone key names: torchvision / timm ResNet and HuggingFace ResNet -> Detectron2 ResNet.

torchvision's names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``) are
those of the official DETR checkpoints and of the timm backbones in HuggingFace's hub DETR
models; HuggingFace's own ResNet (``embedder.embedder.convolution``,
``encoder.stages.0.layers.0.layer.0.convolution``, ``...shortcut...``) is first renamed to them.
Detectron2's ResNet names the same tensors ``stem.conv1``, ``res2.0.conv1.norm``,
``res2.0.shortcut``; its stages res2..res5 are torchvision's layer1..layer4.
"""
from .renaming import compile_rules, rename

_BN = r"(weight|bias|running_mean|running_var)"


def _stage(match):
    """Detectron2's stage name (res2..res5) of torchvision's layer index in group 1 (1..4)."""
    return f"res{int(match[1]) + 1}.{match[2]}"


TORCHVISION_TO_D2 = compile_rules(
    [
        (r"conv1\.weight", "stem.conv1.weight"),
        (rf"bn1\.{_BN}", r"stem.conv1.norm.\1"),
        (r"layer([1-4])\.(\d+)\.conv(\d)\.weight", lambda m: f"{_stage(m)}.conv{m[3]}.weight"),
        (rf"layer([1-4])\.(\d+)\.bn(\d)\.{_BN}", lambda m: f"{_stage(m)}.conv{m[3]}.norm.{m[4]}"),
        (r"layer([1-4])\.(\d+)\.downsample\.0\.weight", lambda m: f"{_stage(m)}.shortcut.weight"),
        (rf"layer([1-4])\.(\d+)\.downsample\.1\.{_BN}", lambda m: f"{_stage(m)}.shortcut.norm.{m[3]}"),
    ]
)

_HF_BLOCK = r"encoder\.stages\.([0-3])\.layers\.(\d+)"


def _layer(match):
    """torchvision's ``layerK.j`` of HuggingFace's stage index (group 1) and block (group 2)."""
    return f"layer{int(match[1]) + 1}.{match[2]}"


HF_RESNET_TO_TORCHVISION = compile_rules(
    [
        (r"embedder\.embedder\.convolution\.weight", "conv1.weight"),
        (rf"embedder\.embedder\.normalization\.{_BN}", r"bn1.\1"),
        (rf"{_HF_BLOCK}\.layer\.(\d)\.convolution\.weight", lambda m: f"{_layer(m)}.conv{int(m[3]) + 1}.weight"),
        (rf"{_HF_BLOCK}\.layer\.(\d)\.normalization\.{_BN}", lambda m: f"{_layer(m)}.bn{int(m[3]) + 1}.{m[4]}"),
        (rf"{_HF_BLOCK}\.shortcut\.convolution\.weight", lambda m: f"{_layer(m)}.downsample.0.weight"),
        (rf"{_HF_BLOCK}\.shortcut\.normalization\.{_BN}", lambda m: f"{_layer(m)}.downsample.1.{m[3]}"),
    ]
)


def torchvision_to_d2(key):
    """Detectron2 ResNet name of a torchvision ResNet key, or None if it is not one."""
    return rename(key, TORCHVISION_TO_D2)


def any_resnet_to_torchvision(key):
    """torchvision name of a torchvision/timm or HuggingFace ResNet key, or None."""
    if rename(key, TORCHVISION_TO_D2) is not None:
        return key
    return rename(key, HF_RESNET_TO_TORCHVISION)
