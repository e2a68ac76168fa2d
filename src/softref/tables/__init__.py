"""Tables: the paper's numbers and builders that put measured results next to them.

``build_retrieval_table`` (image-text retrieval, the CUSA paper's Table 1 layout),
``build_table`` (every other kind: ECCV Caption, uni-modal image retrieval, STS, the CUSA
ablation, MMRef's person retrieval, zero-shot CUB / Flowers and ablation) and the packaged paper
values (``softref.tables.paper``).
"""

from softref.tables.builder import RETRIEVAL_COLUMNS, build_retrieval_table
from softref.tables.kinds import build_table
from softref.tables.paper import load_paper_values, load_person_reference, paper_value

__all__ = [
    "RETRIEVAL_COLUMNS",
    "build_retrieval_table",
    "build_table",
    "load_paper_values",
    "load_person_reference",
    "paper_value",
]
