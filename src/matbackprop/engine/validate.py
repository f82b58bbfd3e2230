"""Old name of the config checks, kept for imports: see :mod:`matbackprop.engine.schema`."""

from matbackprop.engine.schema import config_problems, validate

validate_config = validate
__all__ = ["config_problems", "validate_config"]
