"""factory-gateway: southbound industrial protocols to MQTT through one information model.

Data flows one way:

    device map (YAML) -> adapters (Source.readings) -> pipeline (deadband, quality)
    -> queue -> MQTT publisher (Sink) -> broker
"""

__version__ = "0.1.0"
