"""The data stage: raw files to clean, deduplicated, leak-free splits."""
