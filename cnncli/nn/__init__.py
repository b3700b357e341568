"""The network: layers and their registry, the model that chains them, losses."""
