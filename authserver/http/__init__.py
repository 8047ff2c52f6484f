"""HTTP layer: Flask blueprints and the single error handler. The core never imports this."""
