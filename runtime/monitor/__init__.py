"""Runtime monitor layer: metrics, health and their HTTP exposition."""
