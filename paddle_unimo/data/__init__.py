"""Readers, encoders and collators: raw files -> examples -> batches."""
