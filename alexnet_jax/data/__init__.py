"""Datasets (tensorflow-datasets sources) and the host-side input pipeline."""
