"""Readable class names: ImageNet's WordNet IDs (n01440764) as the words they stand for
("tench"), from the label lists tensorflow-datasets ships (no network needed)."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.lru_cache(maxsize=1)
def wordnet_names() -> dict[str, str]:
    """WordNet ID -> the first of its synonyms, for ImageNet's 1,000 classes ({} if the lists
    are not installed)."""
    try:
        import tensorflow_datasets  # noqa: PLC0415
        from tensorflow_datasets.datasets.siscore import labels  # noqa: PLC0415
    except ImportError:
        return {}
    wnids_file = (Path(tensorflow_datasets.__file__).parent / "datasets" / "imagenet2012"
                  / "labels.txt")
    if not wnids_file.exists():
        return {}
    wnids = wnids_file.read_text().split()
    words = getattr(labels, "IMAGENET_LABELS_LIST", [])
    if len(wnids) != len(words):
        return {}
    return {wnid: word.split(",")[0].strip() for wnid, word in zip(wnids, words)}


def readable(names: tuple[str, ...]) -> tuple[str, ...]:
    """The names with every known WordNet ID replaced by its word."""
    table = wordnet_names()
    return tuple(table.get(name, name) for name in names)
