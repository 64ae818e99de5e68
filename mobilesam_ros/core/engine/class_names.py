"""The class-name table of a detector: ids <-> names, for InstanceMask.class_name, vision_msgs
hypotheses (whose class_id is a string) and the DetectorConfig.classes filter. ROS-free.

Names come from the detector ONNX's metadata (Ultralytics exports carry `names`, parsed by
core/engine/detector.py) or from a text file (DetectorConfig.class_names: one name per line, line k
= class k), the file winning."""
from __future__ import annotations

from typing import Iterable, Mapping, Optional

__all__ = ["ClassNames", "load_class_names"]


def load_class_names(path: str) -> dict[int, str]:
    """{k: name} from a text file of one class name per line (line k, from 0, = class k; blank
    lines keep their index but name nothing). Raises OSError / ValueError with the path."""
    with open(path, encoding="utf-8") as f:
        names = {k: line.strip() for k, line in enumerate(f) if line.strip()}
    if not names:
        raise ValueError(f"class-name file {path} names no class")
    return names


def _as_int(text: str) -> Optional[int]:
    try:
        return int(text.strip())
    except ValueError:
        return None


class ClassNames:
    """names: {class id: name}. Lookups never raise: an unknown id has the name "", an unknown
    name the id -1."""

    def __init__(self, names: Mapping[int, str] = ()) -> None:
        self._names = {int(k): str(v) for k, v in dict(names).items()}
        self._ids: dict[str, int] = {}
        for k in sorted(self._names):
            self._ids.setdefault(self._names[k], k)  # a repeated name: the lowest id

    def __len__(self) -> int:
        return len(self._names)

    def name(self, class_id: int) -> str:
        """The name of `class_id`; "" when the table has none (or class_id = -1)."""
        return self._names.get(int(class_id), "")

    def resolve(self, label: str) -> tuple[int, str]:
        """A detector's class label (vision_msgs ObjectHypothesis.class_id) -> (class id, name).
        A number in [0, 2^31) is the id ("3" -> (3, name of 3)); another number is kept as a name; a name in the table -> (its id, the name); an
        unknown name -> (-1, the name): the name is kept, the id says "not one of ours"."""
        label = label.strip()
        k = _as_int(label)
        if k is not None and 0 <= k < 1 << 31:  # an id InstanceMask.class_id (int32) can hold
            return k, self.name(k)
        if k is not None:  # "-3", "99999999999": not a class id; kept as a name
            return -1, label
        return self._ids.get(label, -1), label

    def ids_of(self, labels: Iterable[str]) -> tuple[frozenset, list]:
        """The class ids a filter list (names, or ids as numbers) selects, and the labels that name
        no class of the table (they select nothing)."""
        ids, unknown = set(), []
        for label in labels:
            k, _ = self.resolve(str(label))
            (ids.add(k) if k >= 0 else unknown.append(str(label)))
        return frozenset(ids), unknown
