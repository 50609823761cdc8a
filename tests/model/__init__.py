"""A model-based test of the allocation protocol: interleavings, lost answers and crashes (issue 18)."""
