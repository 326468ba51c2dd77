package iacorch

# Every stage that changes workspace prod waits behind a gate approved by 2 of group sre.
# A runbook without such a gate gets one added (named prod-approval); a runbook gate
# before those stages that is weaker (fewer approvers, people outside sre, or one that
# lets the requester approve) is an error.
prod_stages := object.get(input.workspaces, "prod", [])

require_gate contains {
	"name": "prod-approval",
	"stages": prod_stages,
	"group": "sre",
	"require": 2,
	"message": "Production change: two SREs must approve",
} if count(prod_stages) > 0
