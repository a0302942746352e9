"""The diagnosis app: upload an ECG picture, see and keep the model's answer (pages and REST API)."""
