"""Serving engines behind one interface: adapters, the routing table, the Triton launcher."""
