"""How closely two panoptic results agree (an exported model against the PyTorch model)."""


def panoptic_agreement(expected, actual):
    """expected, actual: ``panoptic_seg`` pairs (H x W int32 segment ids, segments_info).

    Returns {"same_segments": the same ids, classes and thing flags in the same order,
    "max_score_difference": over matching segments, "max_area_difference" (pixels),
    "pixel_agreement": fraction of pixels with the same segment id (0 for other sizes)}."""
    (seg_a, info_a), (seg_b, info_b) = expected, actual
    keys = [[(s["id"], s["category_id"], s["isthing"]) for s in info] for info in (info_a, info_b)]
    pairs = list(zip(info_a, info_b))
    return {
        "same_segments": keys[0] == keys[1],
        "max_score_difference": max((abs(a["score"] - b["score"]) for a, b in pairs), default=0.0),
        "max_area_difference": max((abs(a["area"] - b["area"]) for a, b in pairs), default=0),
        "pixel_agreement": (seg_a == seg_b).double().mean().item() if seg_a.shape == seg_b.shape else 0.0,
    }
