"""Pure: ranges, blocks, address selection, ownership, the IPPool encoding and names. No I/O,
no Kubernetes, no env; imports nothing of the project but `whereabouts.errors`."""
