"""factory-gateway: southbound industrial protocols to MQTT through one information model.

Data flows one way:

    device map (YAML) -> adapters (Source.readings) -> pipeline (deadband) -> encoder
    -> durable buffer -> forwarder -> MQTT transport (paho) -> broker
"""

__version__ = "0.1.0"
