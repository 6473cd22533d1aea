"""`redone serve`: the SDK over HTTP, OpenAI-compatible, with dynamic batching, API keys and Prometheus metrics.

`create_app` builds the ASGI app for a loaded `Moderator`; `ServeSettings` holds its typed settings (arguments or
`REDONE_SERVE_*` environment variables). Needs the `serve` extra: `pip install redone-sdk[serve]`. See
docs/serve.md.
"""

from . import migrations
from .app import ServeState, create_app
from .db import Database
from .errors import DatabaseUnavailableError, ServeError
from .keys import KeyInfo, KeyStore
from .settings import ServeSettings

__all__ = [
    "Database",
    "DatabaseUnavailableError",
    "KeyInfo",
    "KeyStore",
    "ServeError",
    "ServeSettings",
    "ServeState",
    "create_app",
    "migrations",
]
