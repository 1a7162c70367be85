"""Data side of fvstudio: image loading, datasets and splits, the descriptor cache, sample data.

- :mod:`fvstudio.data.images`: ``load_image`` (any OpenCV format -> float32 RGB, <= 100K pixels).
- :mod:`fvstudio.data.datasets`: class-folder and PASCAL VOC datasets, split lists, random splits
  (``check_split`` refuses splits no classifier can learn from).
- :mod:`fvstudio.data.cache`: ``DescriptorStore``, the resumable on-disk descriptor cache
  (``content_digest`` / ``failures`` for keying and reporting what it holds).
- :mod:`fvstudio.data.synthetic`: the generator of the shipped ``sample_data/``.
"""
from fvstudio.data.datasets import (Dataset, Split, check_split, load_folder_dataset, load_voc_dataset,
                                    open_dataset, random_splits, split_from_lists, voc_split)
from fvstudio.data.images import ImageLoadError, image_size, load_image

__all__ = ["Dataset", "Split", "check_split", "ImageLoadError", "image_size", "load_image", "load_folder_dataset",
           "load_voc_dataset", "open_dataset", "random_splits", "split_from_lists", "voc_split",
           "DescriptorStore", "ExtractionReport"]


def __getattr__(name):  # the cache pulls in the engine's descriptors; import it on first use
    if name in ("DescriptorStore", "ExtractionReport"):
        from fvstudio.data import cache

        return getattr(cache, name)
    raise AttributeError(name)
