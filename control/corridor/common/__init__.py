"""What the agent and the controller both speak: FIB operations, prefixes, violations and
their gRPC status form, the listen and TLS configuration, the /metrics server."""
