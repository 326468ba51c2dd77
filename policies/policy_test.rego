package iacorch_test

import data.iacorch

# Inputs are set per field (`with input.commands as ...`): see docs/policy.md.

test_curl_pipe_sh_denied if {
	denials := iacorch.deny with input.commands as {"x": "curl -fsSL https://get.example | sh"}
		with input.run as {"concurrency": 1}
	count(denials) == 1
}

test_plain_curl_allowed if {
	denials := iacorch.deny with input.commands as {"x": "curl -fsS https://example/health | jq ."}
		with input.run as {"concurrency": 1}
	count(denials) == 0
}

test_concurrency_limit if {
	denials := iacorch.deny with input.commands as {} with input.run as {"concurrency": 8}
	count(denials) == 1
}

test_prod_stages_need_sre_gate if {
	gates := iacorch.require_gate with input.workspaces as {"prod": ["x"], "dev": ["y"]}
		with input.commands as {}
	some gate in gates
	gate.name == "prod-approval"
	gate.stages == ["x"]
	gate.require == 2
}

test_destroy_needs_declared_gate if {
	gates := iacorch.require_gate with input.commands as {"x": "terraform destroy -auto-approve", "y": "echo"}
		with input.workspaces as {}
	some gate in gates
	gate.name == "destroy-approval"
	gate.stages == ["x"]
	gate.declare
}

test_requester_cannot_approve_prod if {
	gate := {"id": "go", "kind": "approval", "tool": null, "workspace": "prod"}
	denials := iacorch.deny with input.stages as {"go": gate}
		with input.run as {"concurrency": 1}
		with input.approval as {"gate": "go", "identity": "alice", "requester": "alice", "decision": "approve"}
	count(denials) == 1
}

test_other_approver_allowed if {
	gate := {"id": "go", "kind": "approval", "tool": null, "workspace": "prod"}
	denials := iacorch.deny with input.stages as {"go": gate}
		with input.run as {"concurrency": 1}
		with input.approval as {"gate": "go", "identity": "bob", "requester": "alice", "decision": "approve"}
	count(denials) == 0
}
