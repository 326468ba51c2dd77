# The quickstart's web site: a port and directories on this machine,
# allocated by Terraform and handed to Ansible and the deploy stage.
terraform {
  required_version = ">= 1.4"
}

variable "env" {
  type        = string
  description = "Environment name; one directory tree per environment."
}

variable "port" {
  type        = number
  description = "TCP port the site listens on (127.0.0.1 only)."
}

variable "base_dir" {
  type        = string
  description = "Absolute directory under which the site's files live."
}

locals {
  root = "${var.base_dir}/${var.env}"
}

resource "terraform_data" "site" {
  input = {
    root = local.root
    port = var.port
  }

  provisioner "local-exec" {
    command = "mkdir -p \"$ROOT/www\" \"$ROOT/run\" \"$ROOT/log\""
    environment = {
      ROOT = self.output.root
    }
  }

  provisioner "local-exec" {
    when    = destroy
    command = "rm -rf \"$ROOT\""
    environment = {
      ROOT = self.output.root
    }
  }
}

output "port" {
  value = terraform_data.site.output.port
}

output "site_dir" {
  value = "${terraform_data.site.output.root}/www"
}

output "pid_file" {
  value = "${terraform_data.site.output.root}/run/site.pid"
}

output "log_file" {
  value = "${terraform_data.site.output.root}/log/site.log"
}

output "url" {
  value = "http://127.0.0.1:${terraform_data.site.output.port}"
}
