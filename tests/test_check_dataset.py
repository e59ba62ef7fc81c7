"""tools/check_dataset.py: a correct split passes; each deliberately broken copy is named with
the file and segment at fault and exits 1; --write-fixed fixes area and bbox, never overwriting."""
import json
import os
import shutil

import pytest

from .helpers import load_tool, register_tiny_shapes, write_panoptic_split


@pytest.fixture(scope="module")
def clean_split(tmp_path_factory):
    return write_panoptic_split(tmp_path_factory.mktemp("clean") / "split", 6, seed=4)


@pytest.fixture
def split(clean_split, tmp_path):
    """A copy of the clean split to break: (json path, image folder, PNG folder, loaded JSON)."""
    json_path, image_dir, png_dir = clean_split
    copy = tmp_path / "split"
    shutil.copytree(os.path.dirname(json_path), copy)
    paths = [str(copy / os.path.relpath(p, os.path.dirname(json_path))) for p in (json_path, image_dir, png_dir)]
    with open(paths[0]) as f:
        return (*paths, json.load(f))


def check(json_path, png_dir, capsys, *extra):
    status = load_tool("check_dataset").main(["--json", json_path, "--png-dir", png_dir, *extra])
    return status, capsys.readouterr().out


def save(json_path, data):
    with open(json_path, "w") as f:
        json.dump(data, f)


def test_a_correct_split_passes(split, capsys):
    json_path, image_dir, png_dir, _ = split
    status, out = check(json_path, png_dir, capsys, "--image-dir", image_dir)
    assert status == 0 and "6 images" in out and " 0 problems" in out


def test_a_registered_shapes_split_passes(tmp_path, capsys):
    _, val = register_tiny_shapes(tmp_path, "shapes_check", num_train=1, num_val=3)
    assert load_tool("check_dataset").main(["--dataset", val]) == 0
    assert "3 images" in capsys.readouterr().out


def test_a_missing_png(split, capsys):
    json_path, _, png_dir, data = split
    missing = os.path.join(png_dir, data["annotations"][2]["file_name"])
    os.remove(missing)
    status, out = check(json_path, png_dir, capsys)
    assert status == 1 and f"{missing}: image id {data['annotations'][2]['image_id']}: the PNG does not exist" in out


def test_a_segment_absent_from_its_png(split, capsys):
    json_path, _, png_dir, data = split
    annotation = data["annotations"][1]
    annotation["segments_info"].append({**annotation["segments_info"][0], "id": 4242})
    save(json_path, data)
    status, out = check(json_path, png_dir, capsys)
    png = os.path.join(png_dir, annotation["file_name"])
    assert status == 1 and f"{png}: image id {annotation['image_id']}, segment 4242: in segments_info but not in the PNG" in out


def test_an_undeclared_category(split, capsys):
    json_path, _, png_dir, data = split
    segment = data["annotations"][0]["segments_info"][0]
    segment["category_id"] = 99
    save(json_path, data)
    status, out = check(json_path, png_dir, capsys)
    assert status == 1 and f"segment {segment['id']}: category_id 99 is not among the categories" in out


def test_a_wrong_area_and_bbox_are_fixed_without_overwriting(split, capsys, tmp_path):
    json_path, _, png_dir, data = split
    segment = data["annotations"][3]["segments_info"][1]
    right = segment["area"], segment["bbox"]
    segment["area"] += 7
    segment["bbox"] = [0, 0, 1, 1]
    save(json_path, data)
    status, out = check(json_path, png_dir, capsys)
    assert status == 1 and f"segment {segment['id']}: area {right[0] + 7} in the JSON, {right[0]} in the PNG" in out
    assert f"bbox [0, 0, 1, 1] in the JSON, {right[1]} in the PNG" in out
    with pytest.raises(SystemExit, match="that is the input JSON"):
        check(json_path, png_dir, capsys, "--write-fixed", json_path)
    assert json.load(open(json_path)) == data
    fixed = str(tmp_path / "fixed.json")
    assert check(json_path, png_dir, capsys, "--write-fixed", fixed)[0] == 1
    assert check(fixed, png_dir, capsys)[0] == 0
    with pytest.raises(SystemExit, match="the file exists"):
        check(json_path, png_dir, capsys, "--write-fixed", fixed)


def test_a_duplicated_category_id(split, capsys):
    json_path, _, png_dir, data = split
    data["categories"].append({**data["categories"][0], "name": "another"})
    save(json_path, data)
    status, out = check(json_path, png_dir, capsys)
    assert status == 1 and f"{json_path}: category id {data['categories'][0]['id']} is listed 2 times" in out


def test_a_stuff_class_split_over_segments(split, capsys):
    json_path, _, png_dir, data = split
    annotation = data["annotations"][0]
    stuff = next(s for s in annotation["segments_info"] if s["category_id"] >= 11)
    other = next(s for s in annotation["segments_info"] if s["category_id"] >= 11 and s is not stuff)
    other["category_id"] = stuff["category_id"]
    save(json_path, data)
    status, out = check(json_path, png_dir, capsys)
    assert status == 1 and f"stuff category {stuff['category_id']} ('" in out and "is split over segments" in out


def test_registration_runs_the_cheap_checks_and_names_the_tool(split):
    from detr_panoptic_d2.data import PanopticDataError
    from detr_panoptic_d2.data.user_datasets import register_panoptic_files

    json_path, image_dir, png_dir, data = split
    data["categories"].append({**data["categories"][0], "name": "another"})
    save(json_path, data)
    os.remove(os.path.join(png_dir, data["annotations"][0]["file_name"]))
    with pytest.raises(PanopticDataError) as error:
        register_panoptic_files("broken_for_registration", json_path, image_dir, png_dir)
    message = str(error.value)
    assert f"category id {data['categories'][0]['id']} is listed 2 times" in message
    assert f"{png_dir}/{data['annotations'][0]['file_name']}: image id 1: the file does not exist" in message
    assert f"python tools/check_dataset.py --json {json_path} --png-dir {png_dir}" in message
