"""Fine-tuning: task heads, parameter-efficient methods and robustness techniques."""
