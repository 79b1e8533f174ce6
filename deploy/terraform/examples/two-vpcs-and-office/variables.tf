variable "isthmus_pip_spec" {
  description = "What pip installs on every edge (\"isthmus==0.1.0\" or a wheel URL)."
  type        = string
}

variable "controllers" {
  description = "The controller replicas, each \"host:port\" (run them first; see README)."
  type        = list(string)
}

variable "controller_public_key" {
  description = "Printed by `isthmus keygen --controller` on the controller."
  type        = string
}

# VPC A, on AWS.
variable "aws_region" {
  type    = string
  default = "eu-central-1"
}

variable "aws_vpc_id" {
  type = string
}

variable "aws_subnet_id" {
  description = "A public subnet of VPC A for the edge."
  type        = string
}

variable "aws_route_tables" {
  description = "VPC A's route tables that reach the other sites: static key => id."
  type        = map(string)
}

variable "aws_ami_id" {
  description = "Debian 12 (or any image with cloud-init, systemd 247+, Python 3.11+)."
  type        = string
}

# VPC B, on Alibaba Cloud.
variable "alicloud_region" {
  type    = string
  default = "eu-central-1"
}

variable "alicloud_vpc_id" {
  type = string
}

variable "alicloud_vswitch_id" {
  type = string
}

variable "alicloud_route_tables" {
  description = "VPC B's route tables that reach the other sites: static key => id."
  type        = map(string)
}

variable "alicloud_image_id" {
  description = "Debian 12 (or any image with cloud-init, systemd 247+, Python 3.11+)."
  type        = string
}

# The office: a gateway host on its LAN with a public address (or a port forward).
variable "office_public_address" {
  description = "The office's public IPv4 address; UDP 51820 forwarded to the office edge."
  type        = string
}
