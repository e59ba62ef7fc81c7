"""tools/visualize_data.py (one picture per image, both sources, yaml and LazyConfig) and
tools/analyze_model.py (FLOPs with attention counted by hand, parameters)."""
import os

import numpy as np
import pytest
from detectron2.modeling import build_model
from fvcore.nn import parameter_count
from PIL import Image

from tests.helpers import load_tool, tiny_cfg, tiny_training_cfg, write_cfg, write_panoptic_split


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("vis")
    return write_panoptic_split(root / "split", 3, 2, size=(64, 80))


def _pictures(folder):
    return {name: np.asarray(Image.open(os.path.join(folder, name))) for name in sorted(os.listdir(folder))}


def test_visualize_data_draws_one_picture_per_image(split, tmp_path):
    tool = load_tool("visualize_data")
    config = write_cfg(tiny_training_cfg("vis_train", "vis_train", tmp_path), tmp_path / "config.yaml")
    images = sorted(os.listdir(split[1]))
    common = ["--config-file", config, "--register", "vis_train", *split]

    assert tool.main(["--source", "annotation", "--output-dir", str(tmp_path / "ann"), *common]) == 0
    drawn = _pictures(tmp_path / "ann")
    assert sorted(drawn) == [os.path.splitext(n)[0] + ".png" for n in images]
    for name in images:
        image = np.asarray(Image.open(os.path.join(split[1], name)).convert("RGB"))
        picture = drawn[os.path.splitext(name)[0] + ".png"]
        assert picture.shape == image.shape and np.abs(picture.astype(int) - image).mean() > 5  # segments drawn

    # As the training mapper feeds the model: resized so that the short side is 48 (overridden).
    argv = ["--source", "dataloader", "--output-dir", str(tmp_path / "loader"), *common, "INPUT.MIN_SIZE_TRAIN", "(48,)"]
    assert tool.main(argv) == 0
    fed = _pictures(tmp_path / "loader")
    assert sorted(fed) == sorted(drawn) and all(min(p.shape[:2]) == 48 for p in fed.values())


def test_visualize_data_with_a_lazyconfig(split, tmp_path):
    tool = load_tool("visualize_data")
    argv = ["--source", "dataloader", "--config-file", "configs/shapes/detr_R18_shapes.py", "--output-dir",
            str(tmp_path / "lazy"), "--register", "vis_lazy", *split, "dataloader.train.dataset.names=vis_lazy"]
    assert tool.main(argv) == 0
    pictures = _pictures(tmp_path / "lazy")
    assert len(pictures) == 3 and all(min(p.shape[:2]) == 96 for p in pictures.values())


def test_analyze_model_prints_flops_with_attention_and_parameters(tmp_path, capsys):
    """Attention FLOPs by hand for tiny_cfg (d=64, 8 heads of 8 channels, 2 encoder layers over
    the 2 x 3 tokens of a 64 x 96 image at stride 32, 2 decoder layers of 10 queries): per layer
    heads x L x S x (E + Ev) multiply-adds: encoder 8*6*6*16 each, decoder self 8*10*10*16 and
    cross 8*10*6*16 each."""
    tool = load_tool("analyze_model")
    config = write_cfg(tiny_cfg(dataset="coco_2017_val_panoptic", num_classes=133), tmp_path / "config.yaml")
    results = tool.main(["--config-file", config, "--tasks", "flop", "parameter", "--input-size", "64", "96",
                         "--num-inputs", "2"])
    printed = capsys.readouterr().out
    assert "Flops table computed from only one input sample" in printed and "Total GFlops: " in printed
    assert "Parameter count:" in printed
    assert len(results["gflops"]) == 2 and results["gflops"][0] > 0
    expected_attention = 2 * 8 * 6 * 6 * 16 + 2 * (8 * 10 * 10 * 16 + 8 * 10 * 6 * 16)
    assert results["flops_by_operator"]["scaled_dot_product_attention"] == expected_attention
    assert results["parameters"] == parameter_count(build_model(tiny_cfg(num_classes=133)))[""]


def test_analyze_model_all_queries_counts_the_mask_head_on_every_query(tmp_path, capsys):
    """--all-queries: the mask head on all N queries whatever the weights keep; with the score
    threshold at 1 no query is kept, so only --all-queries pays for per-query masks."""
    tool = load_tool("analyze_model")
    config = write_cfg(tiny_cfg(dataset="coco_2017_val_panoptic", num_classes=133), tmp_path / "config.yaml")
    argv = ["--config-file", config, "--tasks", "flop", "--input-size", "64", "96", "--num-inputs", "1"]
    none_kept = ["MODEL.DETR.TEST.OBJECT_SCORE_THRESH", "1.0"]
    kept = tool.main(argv + none_kept)["gflops"][0]
    every = tool.main(argv + ["--all-queries"] + none_kept)["gflops"][0]
    assert every > kept
    capsys.readouterr()
