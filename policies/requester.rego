package iacorch

# Whoever started a run never approves a production gate of it.
deny contains {
	"msg": sprintf("%s started this run and may not approve production gate `%s`", [input.approval.identity, input.approval.gate]),
	"stage": input.approval.gate,
} if {
	input.approval.decision == "approve"
	input.approval.identity == input.approval.requester
	input.stages[input.approval.gate].workspace == "prod"
}
