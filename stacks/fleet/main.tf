# One region of the fleet example (plans/fleet.yaml): a config file and a few "nodes"
# on this machine, made with Terraform's built-in terraform_data and local-exec, so no
# provider is downloaded. The runbook applies it once per region, each in its own
# workspace, in parallel.
terraform {
  required_version = ">= 1.4"

  # The runbook points workspace_dir at .iacorch/ (backend_config), so the example
  # leaves no state in the repository.
  backend "local" {}
}

variable "region" {
  type        = string
  description = "Region name; also the Terraform workspace."
}

variable "replicas" {
  type        = number
  default     = 2
  description = "Nodes in this region."
}

variable "base_dir" {
  type        = string
  description = "Absolute directory under which each region keeps its files."
}

locals {
  config_file = "${var.base_dir}/${var.region}/fleet.json"
  config = jsonencode({
    region    = var.region
    replicas  = var.replicas
    workspace = terraform.workspace
  })
}

resource "terraform_data" "config" {
  input = {
    file    = local.config_file
    content = local.config
  }
  # Provisioners run on create only: a new content replaces the resource to rewrite it.
  triggers_replace = [local.config]

  provisioner "local-exec" {
    command = "mkdir -p \"$(dirname \"$FILE\")\" && printf '%s\\n' \"$CONTENT\" > \"$FILE\""
    environment = {
      FILE    = self.output.file
      CONTENT = self.output.content
    }
  }

  provisioner "local-exec" {
    when    = destroy
    command = "rm -f \"$FILE\""
    environment = {
      FILE = self.output.file
    }
  }
}

resource "terraform_data" "node" {
  count = var.replicas
  input = "${var.region}-node-${count.index + 1}"
}

output "region" {
  value = var.region
}

output "nodes" {
  value = terraform_data.node[*].output
}

output "config_file" {
  value = terraform_data.config.output.file
}

