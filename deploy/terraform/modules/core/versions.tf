# Provider-free: this module only computes values (no resource, no data source), so
# `terraform init`, `validate` and `test` run offline.
terraform {
  required_version = ">= 1.9"
}
