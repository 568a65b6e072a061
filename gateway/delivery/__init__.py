"""The delivery path: readings -> encoder -> durable buffer -> forwarder -> MQTT transport."""
