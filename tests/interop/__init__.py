"""Interop harness: real ACME clients run against an ACME server on loopback."""
