"""ttgen package."""
