"""kaepipe: Koopman autoencoders of neural representation dynamics, as a reproducible pipeline."""

__version__ = "0.1.0"
