"""Writing files atomically: a temporary file beside the final name, synced, then renamed over
it, so that a process killed at any moment leaves either the complete file or none (plus,
at worst, a temporary ``<name>.tmp.<pid>`` that ``remove_stale_temporaries`` clears)."""
import os
import re

_TEMPORARY = re.compile(r".+\.tmp\.\d+$")


def atomic_write(path, write):
    """Calls ``write(f)`` on a temporary file beside ``path``, syncs it and renames it to ``path``."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_stale_temporaries(folder):
    """Removes the temporaries a killed ``atomic_write`` left in ``folder`` (not recursive).
    Call it only when no other process writes there. Returns the removed paths."""
    if not os.path.isdir(folder):
        return []
    stale = [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if _TEMPORARY.fullmatch(f)]
    for path in stale:
        os.remove(path)
    return stale
