"""Environment report: ``python -m detr_panoptic_d2.env``.

Detectron2's ``collect_env_info`` (Python, PyTorch, CUDA, detectron2 and its compiled ops,
torchvision, fvcore, ...) followed by what it does not cover and this project needs: how
detectron2 was installed, panopticapi and the other dependencies, torch's CPU threads and this
package's version. Attach its output to bug reports.
"""
from importlib import metadata

from tabulate import tabulate

# Dependencies collect_env_info does not list.
_OTHER_PACKAGES = ("scipy", "pycocotools", "setuptools", "transformers", "onnxruntime", "opencv-python-headless")


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


def project_rows():
    """(name, value) rows that Detectron2's report leaves out."""
    import torch

    rows = [
        ("detectron2 installed as", detectron2_route()),
        ("detectron2._C", "not needed: DETR uses no compiled detectron2 op"),
        ("torch threads", str(torch.get_num_threads())),
    ]
    try:
        import panopticapi  # noqa: F401

        rows.append(("panopticapi", _dist_version("panopticapi-lite") or _dist_version("panopticapi") or "importable"))
    except ImportError as e:
        rows.append(("panopticapi", f"NOT IMPORTABLE ({e})"))
    rows += [(name, _dist_version(name) or "not installed") for name in _OTHER_PACKAGES]
    try:
        import detr_panoptic_d2

        rows.append(("detr_panoptic_d2", detr_panoptic_d2.__version__))
    except Exception as e:  # report, do not hide, a broken plugin import
        rows.append(("detr_panoptic_d2", f"IMPORT FAILED: {type(e).__name__}: {e}"))
    return rows


def environment_report():
    """The report as text: Detectron2's table, then ``project_rows``."""
    from detectron2.utils.collect_env import collect_env_info

    return collect_env_info() + "\n" + tabulate(project_rows())


if __name__ == "__main__":
    print(environment_report())
