"""Corridor's control plane: agent, controller, CLI and lab around the Rust engine."""

__version__ = "0.1.0"
