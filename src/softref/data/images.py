"""Reading images: one decoder (PIL, RGB) and one Dataset of image files, for every layer.

The trainer, the evaluation and the feature extraction all read images through these, so an
unreadable file gets the same error (naming the file) wherever it is met.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["ImageFiles", "load_rgb"]


def load_rgb(path: Path) -> Image.Image:
    """Open an image file as RGB, with an error naming the file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except OSError as err:
        raise OSError(f"{path}: not a readable image ({err})") from err


class ImageFiles:
    """A map-style dataset (``torch.utils.data`` accepts it): item i is ``transform(load_rgb(root / paths[i]))``.

    Args:
        root: the folder the paths are relative to.
        paths: image paths (a list, tuple or numpy array of strings).
        transform: PIL image -> tensor (a student's or a teacher's preprocess).
    """

    def __init__(self, root: Path, paths: Sequence[str], transform: Callable[[Image.Image], Any]) -> None:
        self.root, self.paths, self.transform = Path(root), paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        return self.transform(load_rgb(self.root / str(self.paths[i])))
