"""Step 8, the score-weighted panoptic merge (MODEL.DETR.TEST.MERGE "score_weighted").

The rule of Mask2Former's ``panoptic_inference`` (HuggingFace's
``post_process_panoptic_segmentation`` is its variant without step 2's void), on the kept
queries' masks at the network's input size (the reference rule's resolution, see
``postprocessing``):

1. per pixel, the query with the highest ``score x sigmoid(mask logit)`` wins;
2. the pixel belongs to its winner only where the winner's sigmoid is at least
   ``mask_threshold``; elsewhere it is void, except (``stuff_fills_void``) where the winner
   is a stuff query that survives step 3: a stuff region then keeps the pixels that no mask
   reaches the threshold on, instead of losing them to void;
3. a query is dropped (its pixels void) when it keeps no pixel by step 2, or when the pixels
   it wins in step 1 number less than ``overlap_threshold`` times its own mask (its pixels
   with sigmoid >= ``mask_threshold``), Mask2Former's ratio: a duplicate or a weak query
   whose mask the others cover does not make a segment of its remains;
4. the surviving stuff queries of one class form one segment (numbered at its first query,
   with that query's score).

``postprocessing.panoptic_merge`` then resizes the segment map to the original size and
drops segments of at most SMALL_SEGMENT_AREA pixels to void.
"""
import torch


def score_weighted_segments(masks, scores, classes, is_thing, mask_threshold, overlap_threshold, stuff_fills_void):
    """masks: T x h x w mask logits of the kept queries (network input size, T >= 1); scores,
    classes: T; is_thing: K bool. Returns (segment map h x w long, 0 = void and segments
    numbered 1..S in the order of their first query; first queries S long, the query whose
    class and score each segment takes)."""
    prob = masks.sigmoid()
    # max(0).indices: the first maximum wins ties, as argmax.
    winner = (prob * scores[:, None, None]).max(0).indices
    confident = prob.gather(0, winner[None])[0] >= mask_threshold
    queries = torch.arange(len(classes), device=masks.device)
    wins = winner[None] == queries[:, None, None]
    won = wins.flatten(1).sum(1)
    kept_pixels = (wins & confident[None]).flatten(1).sum(1)
    own = (prob >= mask_threshold).flatten(1).sum(1)
    keep = (kept_pixels > 0) & (own > 0) & (won.double() / own.clamp(min=1).double() >= overlap_threshold)
    number = torch.zeros(len(classes), dtype=torch.long, device=masks.device)
    firsts, first_of_stuff_class = [], {}
    for q in keep.nonzero()[:, 0].tolist():
        c = int(classes[q])
        if not is_thing[c] and c in first_of_stuff_class:
            number[q] = number[first_of_stuff_class[c]]
            continue
        firsts.append(q)
        number[q] = len(firsts)
        if not is_thing[c]:
            first_of_stuff_class[c] = q
    assigned = confident
    if stuff_fills_void:
        assigned = confident | ~is_thing[classes[winner]]
    segments = torch.where(assigned, number[winner], torch.zeros_like(winner))
    return segments, torch.tensor(firsts, dtype=torch.long, device=masks.device)
