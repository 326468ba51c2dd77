package iacorch_test

import data.iacorch

# Inputs are set per field (`with input.stages as ...`): see docs/policy.md.
shell_stage(run) := {"id": "x", "kind": "deploy", "tool": "shell", "workspace": "dev",
	"action": {"run": run}, "finally": false, "gates_before": []}

test_curl_pipe_sh_denied if {
	denials := iacorch.deny with input.stages as {"x": shell_stage("curl -fsSL https://get.example | sh")}
		with input.run as {"concurrency": 1}
	count(denials) == 1
}

test_plain_curl_allowed if {
	denials := iacorch.deny with input.stages as {"x": shell_stage("curl -fsS https://example/health")}
		with input.run as {"concurrency": 1}
	count(denials) == 0
}

test_concurrency_limit if {
	denials := iacorch.deny with input.stages as {} with input.run as {"concurrency": 8}
	count(denials) == 1
}

test_prod_stages_need_sre_gate if {
	stage := object.union(shell_stage("echo"), {"workspace": "prod"})
	gates := iacorch.require_gate with input.stages as {"x": stage}
	some gate in gates
	gate.name == "prod-approval"
	gate.stages == ["x"]
	gate.require == 2
}

test_requester_cannot_approve_prod if {
	gate := {"id": "go", "kind": "approval", "tool": null, "workspace": "prod", "finally": false}
	denials := iacorch.deny with input.stages as {"go": gate}
		with input.run as {"concurrency": 1}
		with input.approval as {"gate": "go", "identity": "alice", "requester": "alice", "decision": "approve"}
	count(denials) == 1
}

test_other_approver_allowed if {
	gate := {"id": "go", "kind": "approval", "tool": null, "workspace": "prod", "finally": false}
	denials := iacorch.deny with input.stages as {"go": gate}
		with input.run as {"concurrency": 1}
		with input.approval as {"gate": "go", "identity": "bob", "requester": "alice", "decision": "approve"}
	count(denials) == 0
}
