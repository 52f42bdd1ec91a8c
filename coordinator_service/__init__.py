"""The CreamFL coordinator: a FastAPI service that runs federations (DESIGN.md section 4)."""
