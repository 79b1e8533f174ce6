variable "name" {
  description = "The edge's name, exactly as in the controller config's [[edges]]."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.name))
    error_message = "name must be 1-63 of a-z, 0-9 and '-', starting and ending with a letter or digit."
  }
}

variable "routes" {
  description = "The routes (CIDRs) this edge advertises: its site's ranges, no host bits set."
  type        = list(string)
  validation {
    condition     = alltrue([for r in var.routes : try(cidrhost(r, 0) == split("/", r)[0], false)])
    error_message = "routes: every entry must be a CIDR with no host bits set, written in canonical form (e.g. 10.244.0.0/16, fd00:b::/48)."
  }
  validation {
    condition     = length(distinct(var.routes)) == length(var.routes)
    error_message = "routes: each route may be listed once."
  }
  validation {
    condition     = !anytrue([for r in var.routes : endswith(r, "/0")])
    error_message = "routes: 0.0.0.0/0 and ::/0 are not allowed; list the site's ranges."
  }
}

variable "remote_routes" {
  description = "The other edges' routes: every route table in route_tables gets one entry per route, pointing at this edge."
  type        = list(string)
  validation {
    condition     = alltrue([for r in var.remote_routes : try(cidrhost(r, 0) == split("/", r)[0], false)])
    error_message = "remote_routes: every entry must be a CIDR with no host bits set, written in canonical form (e.g. 10.245.0.0/16)."
  }
  validation {
    condition     = length(distinct(var.remote_routes)) == length(var.remote_routes)
    error_message = "remote_routes: each route may be listed once."
  }
  validation {
    condition     = !anytrue([for r in var.remote_routes : endswith(r, "/0")])
    error_message = "remote_routes: 0.0.0.0/0 and ::/0 are not allowed; list the other sites' ranges."
  }
  validation {
    condition     = length(setintersection(var.remote_routes, var.routes)) == 0
    error_message = "remote_routes: a route of this edge (in routes) cannot also be a remote route."
  }
}

variable "route_tables" {
  description = "The site's route tables that send remote traffic to this edge: a map of a static key you choose (e.g. \"private-a\") to the route table id. Static keys keep the route entries' addresses stable when ids are only known after apply."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for k in keys(var.route_tables) : can(regex("^[A-Za-z0-9_.-]+$", k))])
    error_message = "route_tables: keys must be 1 or more of A-Z, a-z, 0-9, '_', '.', '-'."
  }
}

variable "controllers" {
  description = "The controller replicas, each \"host:port\" or \"[ipv6]:port\" (1-8)."
  type        = list(string)
  validation {
    condition     = length(var.controllers) >= 1 && length(var.controllers) <= 8
    error_message = "controllers: list 1-8 replicas."
  }
  validation {
    condition     = alltrue([for c in var.controllers : can(regex("^([^\\s:\\[\\]]+|\\[[0-9A-Fa-f:.]+\\]):[0-9]{1,5}$", c))])
    error_message = "controllers: every entry must be \"host:port\" or \"[ipv6]:port\"."
  }
}

variable "controller_public_key" {
  description = "The controller's Ed25519 public key (base64), printed by `isthmus keygen --controller`."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9+/]{43}=$", var.controller_public_key))
    error_message = "controller_public_key must be 44 characters of base64 (a 32-byte key), as printed by `isthmus keygen --controller`."
  }
}

variable "endpoint_address" {
  description = "The public IP address other edges send to (the Elastic IP, the office's public address)."
  type        = string
  validation {
    condition     = try(cidrhost("${var.endpoint_address}/${strcontains(var.endpoint_address, ":") ? 128 : 32}", 0) == var.endpoint_address, false)
    error_message = "endpoint_address must be one IPv4 or IPv6 address in canonical form (no port, no prefix length), not 0.0.0.0."
  }
  validation {
    condition     = !contains(["0.0.0.0", "::"], var.endpoint_address)
    error_message = "endpoint_address cannot be 0.0.0.0 or ::; give the address other edges send to."
  }
}

variable "listen_port" {
  description = "The UDP port of the tunnel (bound on every address; peers send to endpoint_address on it)."
  type        = number
  default     = 51820
  validation {
    condition     = var.listen_port >= 1 && var.listen_port <= 65535 && floor(var.listen_port) == var.listen_port
    error_message = "listen_port must be an integer 1-65535."
  }
}

variable "tun_address" {
  description = "This edge's IPv4 address on its TUN device, CIDR form (e.g. 10.244.255.254/32)."
  type        = string
  validation {
    condition     = can(cidrnetmask(var.tun_address))
    error_message = "tun_address must be an IPv4 address in CIDR form, e.g. 10.244.255.254/32."
  }
}

variable "tun_name" {
  description = "The TUN device's name."
  type        = string
  default     = "isthmus0"
  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{1,15}$", var.tun_name))
    error_message = "tun_name must be 1-15 of A-Z, a-z, 0-9, '_', '.', '-'."
  }
}

variable "tun_mtu" {
  description = "The TUN device's MTU: 1420 fits a 1500-byte underlay over IPv4 or IPv6."
  type        = number
  default     = 1420
  validation {
    condition     = var.tun_mtu >= 576 && var.tun_mtu <= 9000 && floor(var.tun_mtu) == var.tun_mtu
    error_message = "tun_mtu must be an integer 576-9000."
  }
}

variable "persistent_keepalive" {
  description = "Seconds between keepalives to each idle peer (0 = off); set e.g. 25 behind NAT."
  type        = number
  default     = 0
  validation {
    condition     = var.persistent_keepalive >= 0 && var.persistent_keepalive <= 3600 && floor(var.persistent_keepalive) == var.persistent_keepalive
    error_message = "persistent_keepalive must be an integer 0-3600."
  }
}

variable "isthmus_pip_spec" {
  description = "What pip installs into /opt/isthmus/venv: a requirement (\"isthmus==0.1.0\") or a wheel URL."
  type        = string
  validation {
    condition     = length(trimspace(var.isthmus_pip_spec)) > 0 && !can(regex("[\\r\\n]", var.isthmus_pip_spec)) && !startswith(var.isthmus_pip_spec, "-")
    error_message = "isthmus_pip_spec must be one requirement or URL on one line, not an option (e.g. \"isthmus==0.1.0\")."
  }
}
