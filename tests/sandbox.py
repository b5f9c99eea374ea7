"""What a bootstrap action left in a sandboxed root, to compare one run with the next."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_tree(root: Path) -> dict[str, tuple[str, int]]:
    """Every file below `root` (bytecode caches aside): its content hash and mode."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
