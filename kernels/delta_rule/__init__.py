from .chunk import delta_rule_chunk
from .naive import delta_rule_naive

__all__ = ["delta_rule_chunk", "delta_rule_naive"]
