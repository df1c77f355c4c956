"""The controller: serves corridor.v1.Controller and keeps every node's FIB equal to intent."""
