"""Southbound adapters: one package per protocol, each knowing its protocol and nothing of MQTT.

An adapter package holds ``config.py`` (pydantic schema of its devices and points), the pure
pieces it needs (``plan.py``, ``decode.py``...), and a ``source.py`` implementing
``gateway.source.Source``. It is registered in one place: ``gateway/registry.py``.
"""
