"""Photo files: bytes and paths (local or object storage) <-> 8-bit sRGB PIL images; formats,
sniffing, load limits, atomic writes, content hashes. No models."""
