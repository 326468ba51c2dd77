package iacorch

max_concurrency := 4

# At most 4 stages at once, whatever the runbook or --concurrency asks.
deny contains sprintf("concurrency %d is above the organisation's limit of %d", [input.run.concurrency, max_concurrency]) if {
	input.run.concurrency > max_concurrency
}
