# The DR lab's routing record. While this resource exists, the router
# (scripts/dr/router.py) sends traffic to `active` instead of its normal
# backend, the primary; destroying it sends traffic back to the primary.
# So a failover creates the record, and undoing it (rollback, destroy) removes it.
terraform {
  required_version = ">= 1.4"
  # The runbook passes `path` (backend_config), so the state lives in the lab
  # directory and goes away with it (scripts/dr/lab down).
  backend "local" {}
}

variable "record_path" {
  type        = string
  description = "Absolute path of the routing record the router reads."
}

variable "active" {
  type        = string
  description = "Name of the service that takes the traffic."

  validation {
    condition     = contains(["primary", "standby"], var.active)
    error_message = "The active service is `primary` or `standby`."
  }
}

variable "port" {
  type        = number
  description = "TCP port of the active service on 127.0.0.1."
}

locals {
  # The record exactly as written; the destroy provisioner compares against it.
  record = jsonencode({ active = var.active, port = var.port })
}

resource "terraform_data" "routing_record" {
  # Provisioners run only when a resource is created: any change of route
  # replaces the record, so the new route is written.
  triggers_replace = [var.record_path, local.record]

  input = {
    record_path = var.record_path
    record      = local.record
    active      = var.active
    port        = var.port
  }

  # Write the new record before the old one is destroyed, so traffic never
  # falls back to the primary in the middle of a change of route.
  lifecycle {
    create_before_destroy = true
  }

  provisioner "local-exec" {
    # Write, then rename: the router never reads a half-written record.
    command = "printf '%s\\n' \"$RECORD\" > \"$RECORD_PATH.tmp\" && mv \"$RECORD_PATH.tmp\" \"$RECORD_PATH\""
    environment = {
      RECORD      = self.output.record
      RECORD_PATH = self.output.record_path
    }
  }

  provisioner "local-exec" {
    when = destroy
    # Remove the record only if it is still ours: after a change of route the
    # file already holds its successor's record (create_before_destroy).
    command = "if [ \"$(cat \"$RECORD_PATH\" 2>/dev/null)\" = \"$RECORD\" ]; then rm -f \"$RECORD_PATH\"; fi"
    environment = {
      RECORD      = self.output.record
      RECORD_PATH = self.output.record_path
    }
  }
}

output "active" {
  value       = terraform_data.routing_record.output.active
  description = "The service the record sends traffic to."
}

output "port" {
  value = terraform_data.routing_record.output.port
}

output "record_path" {
  value = terraform_data.routing_record.output.record_path
}
