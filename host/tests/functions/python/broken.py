"""A module that fails at import, as a function missing its configuration."""

raise RuntimeError("THUMBNAIL_BUCKET is not set")
