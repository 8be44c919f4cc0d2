from .chunk import selective_scan_chunk
from .naive import selective_scan_naive

__all__ = ["selective_scan_chunk", "selective_scan_naive"]
