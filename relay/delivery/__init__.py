"""Delivery: the forwarder claims queued events, paces them per Space and sends them upstream."""
