"""Video and webcam input of tools/demo.py: every frame through the predictor, drawn by
Detectron2's ``VideoVisualizer``, which keeps each tracked segment's colour from frame to
frame (segments matched by mask overlap).

``annotate_video`` writes the annotated frames to a video file with a progress bar; a frame
that cannot be decoded is reported (its index, 1-based) and skipped, the frames before and
after it are kept. ``show_webcam`` shows the annotated camera frames live until Esc.
"""
import logging
import os

import cv2
import torch
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode
from tqdm import tqdm

logger = logging.getLogger(__name__)

# Codecs of the video files written, by file extension.
FOURCC = {".avi": "MJPG", ".mp4": "mp4v"}
DEFAULT_FPS = 30.0


class UnreadableVideo(ValueError):
    """A video file or camera that OpenCV cannot read; the message names it."""


def open_video(path):
    """A cv2.VideoCapture of the file ``path``; UnreadableVideo naming it when it is missing,
    not a video, or has no readable frame."""
    if not os.path.isfile(path):
        raise UnreadableVideo(f"--video-input {path}: no such file")
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise UnreadableVideo(f"--video-input {path}: OpenCV cannot read it as a video (not a video, or an unsupported codec)")
    return capture


def output_path(output, video_path):
    """The file to write: ``output`` itself, or ``<output>/<video stem>.avi`` when ``output``
    is a folder. ValueError for an extension without a codec here (FOURCC) or the input itself."""
    if os.path.isdir(output):
        output = os.path.join(output, os.path.splitext(os.path.basename(video_path))[0] + ".avi")
    if os.path.splitext(output)[1].lower() not in FOURCC:
        raise ValueError(f"--output {output}: the annotated video is written as {' or '.join(FOURCC)}")
    if os.path.exists(output) and os.path.samefile(output, video_path):
        raise ValueError(f"--output {output} is the input video; give another file or folder")
    return output


class FrameDrawer:
    """predictor (DefaultPredictor or ExportedPredictor) and metadata -> ``draw(bgr frame)``,
    the annotated H x W x 3 uint8 BGR frame, colours kept across the frames it is given."""

    def __init__(self, predictor, metadata):
        self.predictor = predictor
        self.visualizer = VideoVisualizer(metadata, ColorMode.IMAGE)

    def draw(self, frame):
        with torch.no_grad():
            panoptic_seg, segments_info = self.predictor(frame)["panoptic_seg"]
        rgb = frame[:, :, ::-1]
        drawn = self.visualizer.draw_panoptic_seg_predictions(rgb, panoptic_seg.to("cpu"), segments_info)
        return drawn.get_image()[:, :, ::-1]


def _frames(capture, path):
    """Yields (index, frame or None) for every frame of a file: None for a frame that cannot be
    decoded, which is logged. Ends after the frame count of the header, or at the first
    failure when the header has none."""
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    index = 0
    while total <= 0 or index < total:
        ok, frame = capture.read()
        if not ok and total <= 0:
            return
        if not ok:
            logger.error(f"{path}: frame {index + 1} of {total} cannot be decoded; skipping it")
        yield index, frame if ok else None
        index += 1


def annotate_video(drawer, path, output):
    """Writes the annotated frames of the video file ``path`` to ``output`` (see output_path),
    at the input's frame rate. Returns (frames written, indices of broken frames)."""
    capture = open_video(path)
    output = output_path(output, path)
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = capture.get(cv2.CAP_PROP_FPS)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*FOURCC[os.path.splitext(output)[1].lower()])
    writer = cv2.VideoWriter(output, fourcc, fps if fps > 0 else DEFAULT_FPS, (width, height))
    if not writer.isOpened():
        capture.release()
        raise OSError(f"--output {output}: OpenCV cannot write a video there")
    written, broken = 0, []
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    try:
        for index, frame in tqdm(_frames(capture, path), total=total if total > 0 else None, desc="frames", unit="frame"):
            if frame is None:
                broken.append(index)
                continue
            writer.write(drawer.draw(frame))
            written += 1
    finally:
        writer.release()
        capture.release()
    message = f"Wrote {output}: {written} annotated frames"
    if broken:
        logger.error(f"{message}; {len(broken)} frames of {path} could not be decoded: {[i + 1 for i in broken][:20]}")
    else:
        logger.info(message)
    return written, broken


def show_webcam(drawer, camera=0, window="DETR panoptic"):
    """Shows the annotated frames of camera ``camera`` live, until Esc or the end of the stream.
    UnreadableVideo when the camera cannot be opened."""
    capture = cv2.VideoCapture(camera)
    if not capture.isOpened():
        raise UnreadableVideo(f"--webcam: camera {camera} cannot be opened")
    try:
        with tqdm(desc="frames", unit="frame") as progress:
            while True:
                ok, frame = capture.read()
                if not ok:
                    logger.warning(f"--webcam: camera {camera} gave no frame; stopping")
                    return
                cv2.namedWindow(window, cv2.WINDOW_NORMAL)
                cv2.imshow(window, drawer.draw(frame))
                progress.update()
                if cv2.waitKey(1) == 27:  # Esc
                    return
    finally:
        capture.release()
        cv2.destroyAllWindows()
