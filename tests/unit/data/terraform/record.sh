#!/usr/bin/env bash
# Re-record the Terraform output the unit tests parse, from the integration fixture stack.
# Usage: tests/unit/data/terraform/record.sh   (needs terraform on PATH; no network)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
fixture="$here/../../../integration/fixtures/terraform/basic"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$fixture/main.tf" "$work/"
cd "$work"
export TF_DATA_DIR="$work/tfdata" TF_IN_AUTOMATION=1 TF_INPUT=0
vars() { printf '{"name": "%s", "out_file": "%s/written.txt", "password": "hunter2-pw", "sleep_seconds": %s}' "$1" "$work" "$2" > "$work/vars.json"; }
tf() { terraform "$@" 2>/dev/null; }

tf init -input=false -no-color > "$here/init_ok.txt"
tf workspace select -or-create -no-color rec > /dev/null
vars alpha 0
tf plan -input=false -no-color -json -out="$work/tfplan" -var-file="$work/vars.json" > "$here/plan_create.jsonl" || true
tf show -json -no-color "$work/tfplan" > "$here/show_create.json"
tf apply -input=false -no-color -json "$work/tfplan" > "$here/apply_create.jsonl"
tf output -json -no-color > "$here/output.json"
tf plan -input=false -no-color -json -out="$work/tfplan2" -var-file="$work/vars.json" > /dev/null
tf show -json -no-color "$work/tfplan2" > "$here/show_nochange.json"
# drift: an input changed (config) and the written file deleted (reality)
vars beta 0
rm -f "$work/written.txt"
tf plan -input=false -no-color -json -detailed-exitcode -lock=false -var-file="$work/vars.json" > "$here/drift_config.jsonl" || true
tf plan -refresh-only -input=false -no-color -json -detailed-exitcode -lock=false -var-file="$work/vars.json" > "$here/drift_refresh.jsonl" || true
tf plan -input=false -no-color -json -out="$work/tfplan3" -var-file="$work/vars.json" > /dev/null || true
tf show -json -no-color "$work/tfplan3" > "$here/show_update.json"
# a state lock held by a slow apply
vars gamma 3
tf apply -auto-approve -input=false -no-color -json -var-file="$work/vars.json" > /dev/null &
sleep 1.5
tf plan -input=false -no-color -json -lock-timeout=0s -var-file="$work/vars.json" > "$here/plan_locked.jsonl" || true
wait
# a saved plan made stale by a later apply
tf apply -auto-approve -input=false -no-color -json -var-file="$work/vars.json" > /dev/null
tf apply -input=false -no-color -json "$work/tfplan3" > "$here/apply_stale.jsonl" || true
tf apply -destroy -auto-approve -input=false -no-color -json -var-file="$work/vars.json" > "$here/destroy.jsonl"
# a syntax error, seen by init (plain text) and plan (-json)
printf 'resource "terraform_data" "x" {\n  input = \n}\n' > broken.tf
TF_DATA_DIR="$work/tfdata-broken" terraform init -input=false -no-color > "$here/init_syntax_error.txt" 2>&1 || true
tf plan -input=false -no-color -json -var-file="$work/vars.json" > "$here/plan_syntax_error.jsonl" || true
# output -json on a workspace without state
rm broken.tf
tf workspace select -or-create -no-color empty > /dev/null
tf output -json -no-color > "$here/output_empty.json"
# a module of only locals and outputs: never applied, then a changed var
mkdir "$work/naming" && cp "$fixture/../naming/main.tf" "$work/naming/" && cd "$work/naming"
export TF_DATA_DIR="$work/naming/tfdata"
tf init -input=false -no-color > /dev/null
tf plan -input=false -no-color -json -out="$work/naming/tfplan" -var app=web > /dev/null
tf show -json -no-color "$work/naming/tfplan" > "$here/show_outputs_create.json"
tf apply -input=false -no-color -json "$work/naming/tfplan" > /dev/null
tf plan -input=false -no-color -json -out="$work/naming/tfplan2" -var app=payments > /dev/null
tf show -json -no-color "$work/naming/tfplan2" > "$here/show_outputs_update.json"
# a moved block, an import block and a removed block: no resource to add, change or destroy,
# yet a plan with changes (Terraform's plan -detailed-exitcode exits 2)
mkdir "$work/moves" && cd "$work/moves"
export TF_DATA_DIR="$work/moves/tfdata"
printf 'resource "terraform_data" "%s" {}\n' old adopted gone > main.tf
printf 'output "adopted" {\n  value = terraform_data.adopted.id\n}\n' >> main.tf
tf init -input=false -no-color > /dev/null
tf apply -auto-approve -input=false -no-color > /dev/null
adopted="$(tf output -raw adopted)"
tf state rm terraform_data.adopted > /dev/null
cat > main.tf <<HCL
resource "terraform_data" "new" {}

moved {
  from = terraform_data.old
  to   = terraform_data.new
}

import {
  to = terraform_data.adopted
  id = "$adopted"
}

resource "terraform_data" "adopted" {}

removed {
  from = terraform_data.gone
  lifecycle {
    destroy = false
  }
}

output "adopted" {
  value = terraform_data.adopted.id
}
HCL
tf plan -input=false -no-color -out="$work/moves/tfplan" > /dev/null || true
tf show -json -no-color "$work/moves/tfplan" > "$here/show_state_only.json"
tf plan -input=false -no-color -json -detailed-exitcode -lock=false > "$here/drift_state_only_config.jsonl" || true
tf plan -refresh-only -input=false -no-color -json -detailed-exitcode -lock=false > "$here/drift_state_only_refresh.jsonl" || true
sed -i "s#$work#/tmp/REC#g" "$here"/*.json "$here"/*.jsonl "$here"/*.txt
