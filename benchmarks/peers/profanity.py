"""`alt-profanity-check`: a linear SVM over English word n-grams, the usual pip-installable profanity filter."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ProfanityCheckPeer", "available"]


def available() -> str | None:
    """None when the package imports, else why not."""
    try:
        import profanity_check  # noqa: F401
    except ImportError as exc:
        return f"alt-profanity-check is not installed ({exc.name}); pip install alt-profanity-check"
    return None


class ProfanityCheckPeer:
    """English only. Profane (probability ≥ 0.5) maps to `offensive`; it has no hate or sexism class."""

    name = "profanity-check"
    languages: tuple[str, ...] | None = ("en",)
    threshold = 0.5

    def __init__(self) -> None:
        from profanity_check import predict_prob

        self._predict_prob = predict_prob

    def predict(self, texts: Sequence[str]) -> list[str]:
        probs = self._predict_prob(list(texts))
        return ["offensive" if p >= self.threshold else "safe" for p in probs]
