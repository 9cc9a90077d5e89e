"""Compatibility matrix: fleetca's CA and certificate profiles against verifiers and TLS stacks."""
