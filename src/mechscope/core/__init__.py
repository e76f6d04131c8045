"""The core: model loading, architecture adapters, sites, interventions, run and trace."""
