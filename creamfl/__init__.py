"""CreamFL as a pure library: models, losses, ensemble, data, evaluation, training, simulation.

Depends on torch (and transformers for the server's text encoder: extra `server`); the web, database
and HTTP layers live in the services.
"""

__version__ = "0.2.0"
