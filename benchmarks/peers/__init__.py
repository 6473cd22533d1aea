"""The alternatives a user would try before (or instead of) redone-sdk, each with the same small interface.

A harm peer has `name`, `languages` (None: any) and `predict(texts) -> list[label]` over the SDK's harm taxonomy
(safe / offensive / hate / sexism); a relevance peer has `name` and `predict(pairs) -> list[grade]`.
"""

from .profanity import ProfanityCheckPeer
from .relevance import Bm25Peer, TfidfCosinePeer
from .tfidf import TfidfLogRegPeer

__all__ = ["Bm25Peer", "ProfanityCheckPeer", "TfidfCosinePeer", "TfidfLogRegPeer"]
