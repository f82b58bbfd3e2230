"""matbackprop — matrix backpropagation for deep networks with structured layers.

`matbackprop.spectral` is the self-contained structured-layer module (pure torch).
"""

__version__ = "0.1.0"
