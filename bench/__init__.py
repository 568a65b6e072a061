"""Benchmarks. They print figures; tests never assert time."""
