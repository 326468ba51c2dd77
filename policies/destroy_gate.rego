package iacorch

# A stage that destroys (terraform destroy, kubectl delete) must be behind a gate the
# runbook declares itself, approved by one of sre: policy does not add this one.
destroying := [id |
	s := input.stages[id]
	s.tool == "shell"
	regex.match(`terraform\s+destroy|kubectl\s+delete`, s.action.run)
]

require_gate contains {
	"name": "destroy-approval",
	"stages": destroying,
	"group": "sre",
	"require": 1,
	"declare": true,
} if count(destroying) > 0
