"""Sparkplug B 3.0 for SCADA and UNS hosts: payloads from Eclipse Tahu's ``sparkplug_b.proto``
(``make proto`` regenerates ``sparkplug_b_pb2``)."""
