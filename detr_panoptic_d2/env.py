"""Environment report: ``python -m detr_panoptic_d2.env``.

Prints the versions this project depends on, how detectron2 was installed, and whether
CUDA is usable. Attach its output to bug reports.
"""
import platform
import sys
from importlib import metadata


def _dist_version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def detectron2_route():
    """'wheel' (PyPI's sal-detectron2), 'git'/'source' (upstream) or None when absent."""
    if _dist_version("sal-detectron2"):
        return "wheel (sal-detectron2 from PyPI)"
    if _dist_version("detectron2"):
        return "git (upstream detectron2)"
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return None
    return "source tree on sys.path"


def collect():
    """Returns a list of (name, value) rows describing the environment."""
    rows = [("python", sys.version.split()[0]), ("platform", platform.platform())]
    try:
        import torch

        rows.append(("torch", torch.__version__))
        cuda = torch.cuda.is_available()
        rows.append(("cuda available", str(cuda)))
        if cuda:
            rows.append(("cuda device", torch.cuda.get_device_name(0)))
        rows.append(("torch threads", str(torch.get_num_threads())))
    except ImportError as e:
        rows.append(("torch", f"NOT IMPORTABLE ({e})"))
    try:
        import torchvision

        rows.append(("torchvision", torchvision.__version__))
    except ImportError as e:
        rows.append(("torchvision", f"NOT IMPORTABLE ({e})"))
    try:
        import detectron2

        rows.append(("detectron2", f"{detectron2.__version__} via {detectron2_route()}"))
        try:
            from detectron2 import _C  # noqa: F401

            rows.append(("detectron2 _C", "loaded"))
        except ImportError:
            rows.append(("detectron2 _C", "not loaded (fine: DETR needs no compiled ops)"))
    except ImportError as e:
        rows.append(("detectron2", f"NOT IMPORTABLE ({e})"))
    panoptic = _dist_version("panopticapi-lite") or _dist_version("panopticapi")
    try:
        import panopticapi  # noqa: F401

        rows.append(("panopticapi", panoptic or "importable"))
    except ImportError as e:
        rows.append(("panopticapi", f"NOT IMPORTABLE ({e})"))
    for name in ("numpy", "scipy", "pycocotools", "setuptools", "transformers", "opencv-python-headless"):
        rows.append((name, _dist_version(name) or "not installed"))
    try:
        import detr_panoptic_d2

        rows.append(("detr_panoptic_d2", detr_panoptic_d2.__version__))
    except Exception as e:  # report, do not hide, a broken plugin import
        rows.append(("detr_panoptic_d2", f"IMPORT FAILED: {type(e).__name__}: {e}"))
    return rows


def main():
    rows = collect()
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")


if __name__ == "__main__":
    main()
