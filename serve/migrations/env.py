"""Alembic's environment: runs on the connection that `upgrade` passes (never from a URL in a file)."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
