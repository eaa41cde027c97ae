"""The atheris seed corpus (fuzz/corpus/<target>/), shared with the property tests."""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus"


def load(target: str) -> list[bytes]:
    """Seed inputs of one target, in file-name order (names start with a 2-digit index)."""
    return [p.read_bytes() for p in sorted((CORPUS / target).iterdir()) if p.is_file()]


REQUEST_HEADS = load("http_head")
TOKEN_RESPONSES = load("token_response")
