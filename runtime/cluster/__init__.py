"""Runtime cluster layer: config, discovery, and the supervisors that run every service instance."""
