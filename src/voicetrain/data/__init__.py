"""Data: corpus formats, preparation and QC, the feature cache and the training data loader."""
