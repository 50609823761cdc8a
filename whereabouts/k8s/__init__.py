"""I/O with the Kubernetes API for the per-invocation path: HTTP/1.1 over TLS, the kubeconfig,
the Store of pools and reservations, the Lease."""
