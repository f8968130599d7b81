"""Flask blueprints, one per concern: health, send, metrics, openapi."""
