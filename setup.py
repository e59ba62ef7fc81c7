"""detr_panoptic_d2: DETR panoptic segmentation as a Detectron2 plugin.

torch, torchvision, detectron2 and panopticapi are not listed in ``install_requires``:
as in other Detectron2 projects they are installed by the set-up step (``make setup``),
which picks the torch build for the machine and the detectron2 route (see docs/INSTALL.md).
"""
from setuptools import find_packages, setup

setup(
    name="detr_panoptic_d2",
    version="0.1.0",
    description="DETR panoptic segmentation (Carion et al., ECCV 2020) as Detectron2 components",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["detr_panoptic_d2", "detr_panoptic_d2.*"]),
    install_requires=[
        "numpy",
        "scipy>=1.7",
        "Pillow>=7.1",
        "pycocotools>=2.0.2",
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7,<0.1.10",
        "tqdm",
        "safetensors",
        # Detectron2's Visualizer (tools/demo.py, tools/inspect_pipeline.py) imports cv2.
        "opencv-python-headless",
        "matplotlib",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-timeout",
            # HuggingFace's DetrForSegmentation is the numerical reference in the parity tests.
            "transformers>=4.40",
            # Detectron2's ViT (tests/test_backbones.py) imports timm's DropPath and Mlp.
            "timm",
        ],
        # tools/export_model.py, onnxruntime inference (detr_panoptic_d2/export); the tests use them too.
        "export": [
            "onnx>=1.16",
            "onnxruntime>=1.18",
            "onnxscript>=0.1",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
