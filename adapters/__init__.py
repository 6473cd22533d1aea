"""Adapters that connect the SDK to other systems (installed as `redone_sdk.adapters`).

Each adapter is a subpackage with its own optional dependencies, e.g. `redone_sdk.adapters.kafka`
(`pip install redone-sdk[kafka]`); importing this package imports none of them.
"""
