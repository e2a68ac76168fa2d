"""softref.models."""
