"""The northbound sink: MQTT. Knows MQTT and nothing about any southbound protocol."""
