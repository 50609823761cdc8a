"""The long-running and operator side: the CLI, the reconciler, the audit, on the official
`kubernetes` client."""
