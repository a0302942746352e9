"""REST API v1 (Django REST framework): /api/v1/predictions, /model, /health, schema and docs."""
