"""Organisation policy in Rego: rules every runbook obeys and none can loosen (docs/policy.md)."""
