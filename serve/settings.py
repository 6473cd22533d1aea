"""Typed, frozen settings of `redone serve`, from keyword arguments and/or `REDONE_SERVE_*` environment variables.

Arguments win over the environment, which wins over the defaults; every field's variable is
`REDONE_SERVE_<FIELD>` (e.g. `REDONE_SERVE_DB`, `REDONE_SERVE_MAX_BATCH`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ENV_PREFIX", "ServeSettings", "default_db_url", "env_name"]

ENV_PREFIX = "REDONE_SERVE_"


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    return ENV_PREFIX + field.upper()


def default_db_url() -> str:
    """An SQLite file under the user's data folder (`$XDG_DATA_HOME/redone/serve.sqlite3`)."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{base / 'redone' / 'serve.sqlite3'}"


class ServeSettings(BaseModel):
    """Everything the HTTP service needs besides the model; immutable once built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(default="127.0.0.1", min_length=1, description="Address to bind (loopback unless told).")
    port: int = Field(default=8080, ge=0, le=65_535, description="TCP port; 0 picks a free one.")
    db: str = Field(default_factory=default_db_url, min_length=1, description="SQLAlchemy URL of the key database.")
    auth: bool = Field(default=True, description="Require an API key on /v1/*; off only for trusted networks.")

    batching: bool = Field(default=True, description="Gather concurrent requests into shared classify passes.")
    max_batch: int = Field(default=64, ge=1, le=4_096, description="Most notes in one gathered pass.")
    max_wait_ms: float = Field(default=5.0, ge=0, le=1_000, description="Longest wait to fill a pass, in ms.")
    max_passes: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Most gathered passes running at once (default: the model's workers, one per core on CPU).",
    )
    max_queue: int = Field(
        default=2_048, ge=1, description="Most notes waiting or being classified; past it requests get 429."
    )
    max_inputs: int = Field(default=256, ge=1, le=100_000, description="Most notes (or pairs) in one request.")
    max_body_bytes: int = Field(default=1_048_576, ge=1_024, description="Larger request bodies get 413.")
    body_timeout_s: float = Field(default=10.0, gt=0, description="Longest time to receive a request body (408).")
    request_timeout_s: float = Field(default=30.0, gt=0, description="Longest wait for a result (503 after it).")
    drain_timeout_s: float = Field(
        default=30.0, ge=0, description="On SIGTERM: longest wait for in-flight requests before stopping anyway."
    )

    rate_limit: float = Field(default=50.0, gt=0, description="Requests per second per key (a key may override).")
    rate_burst: int = Field(default=100, ge=1, description="Requests a key may send at once before the rate applies.")
    key_cache_s: float = Field(default=5.0, ge=0, description="How long a key check is reused (revocation delay).")
    key_grace_s: float = Field(
        default=300.0, ge=0, description="While the database is down, keys checked this recently still work."
    )

    log_notes: bool = Field(default=False, description="Log each note's text and verdict (off: nothing about notes).")

    review: bool = Field(default=True, description="Queue `review` verdicts and serve the /review console.")
    review_claim_s: float = Field(default=600.0, gt=0, description="How long a reviewer's claim on a note lasts.")
    review_session_s: float = Field(default=28_800.0, gt=0, description="How long a console login lasts.")
    review_secret: str | None = Field(
        default=None,
        min_length=32,
        description="Key that signs console cookies; unset: a random one per start (logins end at a restart).",
    )
    review_cookie_secure: bool = Field(
        default=True, description="Mark console cookies Secure (sent over HTTPS only; browsers exempt localhost)."
    )
    review_login_max_per_user: int = Field(
        default=5, ge=1, description="Failed console logins of one name within the window before 429."
    )
    review_login_max_per_client: int = Field(
        default=20, ge=1, description="Failed console logins from one client address within the window before 429."
    )
    review_login_window_s: float = Field(
        default=900.0, gt=0, description="The window of the failed-login limits, in seconds (per process)."
    )

    @field_validator("db")
    @classmethod
    def _postgres_driver(cls, value: str) -> str:
        # SQLAlchemy's default PostgreSQL driver is psycopg2; the [serve] extra installs psycopg 3.
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServeSettings:
        """Build settings from `REDONE_SERVE_*` variables (empty ones ignored), then non-None `overrides`."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            if env.get(env_name(name), "") != "":
                values[name] = env[env_name(name)]
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values)
