"""The MQTT transport (paho behind one boundary) and its settings from the map."""
