"""Southbound adapters: one folder per protocol, each knowing its protocol and nothing of MQTT.

A folder holds ``adapter.py`` (its ``gateway.adapter.Adapter``: schema, source and simulator
factories, plan, own commands), ``config.py`` (pydantic schema of its devices and points), the
pure pieces it needs (``plan.py``, ``decode.py``...), and a ``source.py`` implementing
``gateway.source.Source``. It is registered with one line in ``gateway/registry.py``.
"""
