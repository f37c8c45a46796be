"""lmforge: train transformer language models on your own data with limited hardware."""

from lmforge.version import __version__ as __version__


def load(path, batch_size: int = 32, max_length=None):  # noqa: ANN001 - kept light: torch loads on first call
    """`lmforge.load(DIR)` -> a Predictor (see lmforge.serve.predictor)."""
    from lmforge.serve.predictor import load as _load

    return _load(path, batch_size=batch_size, max_length=max_length)
