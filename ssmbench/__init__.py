"""ssmbench: benchmark and compare selective state-space models (Mamba) with Transformers."""

__version__ = "0.1.0"
