"""tools/demo.py --video-input / --webcam on MJPG videos written by OpenCV, with a small random
model: every frame annotated, colours stable across frames, broken frames reported and skipped,
unreadable videos named."""
import cv2
import numpy as np
import pytest

from tests.helpers import load_tool, write_image, write_tiny_panoptic_model

demo = load_tool("demo")


def _write_video(path, frames, fps=5):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return str(path)


def _read_video(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames, capture.get(cv2.CAP_PROP_FPS)
        frames.append(frame)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    return write_tiny_panoptic_model(tmp_path_factory.mktemp("video_model"))


def _argv(model_files, video, output):
    config, weights = model_files
    return ["--config-file", config, "--video-input", video, "--output", str(output), "--confidence-threshold", "0",
            "--opts", "MODEL.WEIGHTS", weights]


def test_ten_frames_in_ten_annotated_frames_out_with_stable_colours(model_files, tmp_path):
    """10 identical frames give 10 identical annotated frames (the VideoVisualizer keeps each
    segment's colour; Detectron2's Visualizer draws thing colours jittered at random), of the
    input's size and frame rate, different from the input."""
    frame = cv2.imread(write_image(tmp_path / "frame.png", 96, 128, seed=2))
    video = _write_video(tmp_path / "in.avi", [frame] * 10)
    inputs, _ = _read_video(video)
    assert demo.main(_argv(model_files, video, tmp_path / "out.avi")) == 0
    frames, fps = _read_video(tmp_path / "out.avi")
    assert len(frames) == 10 and fps == 5
    assert all(f.shape == (96, 128, 3) for f in frames)
    assert np.abs(frames[0].astype(int) - inputs[0]).mean() > 5
    for f in frames[1:]:
        # Exact by construction: the same frame through the same operations, drawn as integer pictures.
        assert np.array_equal(f, frames[0])


def test_a_broken_frame_is_reported_and_the_others_written(model_files, tmp_path, caplog):
    frames = [cv2.imread(write_image(tmp_path / f"f{i}.png", 96, 128, seed=i)) for i in range(10)]
    data = bytearray(open(_write_video(tmp_path / "in.avi", frames), "rb").read())
    starts = [i for i in range(len(data) - 1) if data[i:i + 3] == b"\xff\xd8\xff"]
    assert len(starts) == 10
    data[starts[5] + 2:starts[5] + 600] = bytes(598)  # frame 6's JPEG data zeroed
    broken = tmp_path / "broken.avi"
    broken.write_bytes(bytes(data))
    (tmp_path / "out").mkdir()
    assert demo.main(_argv(model_files, str(broken), tmp_path / "out")) == 1  # a folder: <folder>/broken.avi
    written, _ = _read_video(tmp_path / "out" / "broken.avi")
    assert len(written) == 9
    assert "frame 6 of 10 cannot be decoded; skipping it" in caplog.text
    assert "9 annotated frames; 1 frames of" in caplog.text and "could not be decoded: [6]" in caplog.text


def test_unreadable_videos_and_cameras_are_named(model_files, tmp_path):
    (tmp_path / "junk.avi").write_bytes(b"not a video" * 10)
    with pytest.raises(SystemExit, match=f"--video-input {tmp_path}/junk.avi: OpenCV cannot read it as a video"):
        demo.main(_argv(model_files, str(tmp_path / "junk.avi"), tmp_path / "out.avi"))
    with pytest.raises(SystemExit, match=f"--video-input {tmp_path}/missing.avi: no such file"):
        demo.main(_argv(model_files, str(tmp_path / "missing.avi"), tmp_path / "out.avi"))
    video = _write_video(tmp_path / "in.avi", [np.zeros((64, 64, 3), np.uint8)] * 2)
    with pytest.raises(ValueError, match=r"--output .*out.mkv: the annotated video is written as .avi or .mp4"):
        demo.main(_argv(model_files, video, tmp_path / "out.mkv"))
    with pytest.raises(ValueError, match=r"--output .*in.avi is the input video"):
        demo.main(_argv(model_files, video, tmp_path))
    config, weights = model_files
    with pytest.raises(SystemExit):
        demo.main(["--config-file", config, "--webcam", "--video-input", video])  # one source only
    with pytest.raises(SystemExit, match="--webcam: camera 0 cannot be opened"):  # no camera on this machine
        demo.main(["--config-file", config, "--webcam", "--opts", "MODEL.WEIGHTS", weights])
