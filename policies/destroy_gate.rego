package iacorch

# A stage that destroys (terraform destroy, kubectl delete) must be behind a gate the
# runbook declares itself, approved by one of sre: policy does not add this one.
destroying := [id |
	command := input.commands[id]
	mentions_deletion(command) # cheap test first: a regex per stage costs far more
	regex.match(`terraform\s+destroy|kubectl\s+delete`, command)
]

mentions_deletion(command) if contains(command, "destroy")

mentions_deletion(command) if contains(command, "delete")

require_gate contains {
	"name": "destroy-approval",
	"stages": destroying,
	"group": "sre",
	"require": 1,
	"declare": true,
} if count(destroying) > 0
