"""The CNI plugin: the boundary (env, stdin, results and error codes), the ipam config, the
verbs over a Store, the node lock, the log."""
