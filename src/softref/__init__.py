"""softref: reference pipeline for CUSA and MMRef fine-grained image-text retrieval."""

__version__ = "0.1.0"
