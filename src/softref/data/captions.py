"""Caption cleaning: the public CUSA code's ``pre_caption``, for the text teacher and the student.

Light (``re`` only), so the trainer, the evaluation and the teachers share one definition.
"""

from __future__ import annotations

import re

__all__ = ["PRE_CAPTION_DESCRIPTION", "pre_caption"]

_CAPTION_PUNCTUATION = re.compile(r"[,.'!?\"()*#:;~]")


def pre_caption(caption: str, max_words: int = 64) -> str:
    """CUSA's caption cleaning: lower-case, punctuation to spaces, whitespace collapsed, <= max_words words.

    The characters , . ' ! ? " ( ) * # : ; ~ - / become spaces, "<person>" becomes "person",
    runs of whitespace become one space, and only the first `max_words` words are kept. A caption
    with no word left is an error, as in the reference code.

    Example:
        >>> pre_caption("A man, riding a Horse!")
        'a man riding a horse'
    """
    text = _CAPTION_PUNCTUATION.sub(" ", caption.lower())
    text = text.replace("-", " ").replace("/", " ").replace("<person>", "person")
    words = text.split()
    if not words:
        raise ValueError(f"caption {caption!r} has no word left after pre_caption cleaning")
    return " ".join(words[:max_words])


PRE_CAPTION_DESCRIPTION = (
    "pre_caption: lower-case; , . ' ! ? \" ( ) * # : ; ~ - / replaced by spaces; whitespace collapsed; at most 64 words"
)
