"""CreamFL as a pure library: models, losses, ensemble, data, evaluation, training, simulation.

Depends on torch and transformers only; the web, database and HTTP layers live in the services.
"""

__version__ = "0.1.0"
