variable "name" {
  description = "The edge's name, exactly as in the controller config's [[edges]]."
  type        = string
}

variable "vpc_id" {
  description = "The VPC the edge serves."
  type        = string
}

variable "subnet_id" {
  description = "A subnet with a route to an internet gateway (the Elastic IP must be reachable)."
  type        = string
}

variable "ami_id" {
  description = "An image with cloud-init, systemd 247 or newer and Python 3.11 or newer (e.g. Debian 12)."
  type        = string
}

variable "instance_type" {
  description = "The edge instance's type."
  type        = string
  default     = "t3.small"
}

variable "key_name" {
  description = "An EC2 key pair for SSH, or null for none (use SSM Session Manager instead)."
  type        = string
  default     = null
}

variable "iam_instance_profile_name" {
  description = "An instance profile to attach (e.g. for SSM), or null for none."
  type        = string
  default     = null
}

variable "routes" {
  description = "The routes this edge advertises (the VPC's ranges); traffic from them may enter the edge to be forwarded."
  type        = list(string)
}

variable "remote_routes" {
  description = "The other edges' routes: each route table in route_tables gets a route to the edge's interface for each."
  type        = list(string)
}

variable "route_tables" {
  description = "The VPC's route tables that send remote traffic to the edge: static key => route table id."
  type        = map(string)
}

variable "peer_addresses" {
  description = "The public IPv4 addresses of the other edges: the only sources the UDP port accepts."
  type        = list(string)
  validation {
    condition     = alltrue([for a in var.peer_addresses : try(cidrhost("${a}/32", 0) == a, false) && a != "0.0.0.0"])
    error_message = "peer_addresses: every entry must be one IPv4 address (no prefix length), not 0.0.0.0."
  }
}

variable "controllers" {
  description = "The controller replicas, each \"host:port\"."
  type        = list(string)
}

variable "controller_public_key" {
  description = "The controller's Ed25519 public key (base64)."
  type        = string
}

variable "listen_port" {
  description = "The UDP port of the tunnel."
  type        = number
  default     = 51820
}

variable "tun_address" {
  description = "This edge's IPv4 address on its TUN device, CIDR form."
  type        = string
}

variable "persistent_keepalive" {
  description = "Seconds between keepalives to idle peers (0 = off)."
  type        = number
  default     = 0
}

variable "isthmus_pip_spec" {
  description = "What pip installs into /opt/isthmus/venv (\"isthmus==0.1.0\" or a wheel URL)."
  type        = string
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
