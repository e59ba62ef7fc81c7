"""Test-time preprocessing of one image, as Detectron2's ``DefaultPredictor.__call__`` does it
(that call returns the model's output only; the demo's DataLoader workers and the pipeline
inspector need the input dict itself). The ONNX predictor runs ``DefaultPredictor.__call__``."""
import numpy as np
import torch


def predictor_input(image, resize, input_format, image_format="BGR"):
    """The model input dict of ``image`` (H x W x 3 uint8 in ``image_format``, "BGR" as
    DefaultPredictor takes it, or "RGB"): "image", 3 x H' x W' float32 in ``input_format``
    (INPUT.FORMAT) resized by ``resize`` (the predictor's ``aug``: ResizeShortestEdge with
    INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST), and "height", "width", the original size."""
    if (image_format == "RGB") != (input_format == "RGB"):
        image = image[:, :, ::-1]
    resized = resize.get_transform(image).apply_image(image)
    tensor = torch.as_tensor(np.ascontiguousarray(resized.astype("float32").transpose(2, 0, 1)))
    return {"image": tensor, "height": image.shape[0], "width": image.shape[1]}
