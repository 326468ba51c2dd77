package iacorch

# Approver groups -> users, from groups.yaml in this directory.
approvers := data.groups
