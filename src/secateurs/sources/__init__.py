"""Where models come from: ``load_model(spec)`` and one module per source."""
