package iacorch

# No shell stage runs a downloaded script: `curl ... | sh` (or wget, bash, zsh).
deny contains {
	"msg": sprintf("stage `%s` pipes a download into a shell; vendor the script instead", [id]),
	"stage": id,
} if {
	some id, command in input.commands
	contains(command, "|") # cheap test first: a regex per stage costs far more
	regex.match(`(curl|wget)[^|;&]*\|\s*(sudo\s+)?(ba|z|da)?sh\b`, command)
}
