"""Device simulators driven by the same device maps the gateway reads.

``simulators.run.serve(config)`` starts a simulator for every device whose protocol has one.
"""
