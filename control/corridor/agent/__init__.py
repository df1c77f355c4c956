"""The agent: serves corridor.v1.Dataplane on a node and hosts its FIB (and, later, the engine)."""
