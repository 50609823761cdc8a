"""A cluster-wide IPAM CNI plugin that stores its state in the Kubernetes API."""

__version__ = "0.1.0"
