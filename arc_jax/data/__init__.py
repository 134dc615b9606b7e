"""Input pipeline: tokenizers (tokenizers.py), record sources and mixtures (sources.py, mixture.py),
ARC training tasks (tasks.py) and the packing of samples into static-shape batches (packing.py),
chained and resumable in pipeline.py."""
