# An isthmus edge in an Alibaba Cloud VPC: an ECS instance with an Elastic IP as its
# endpoint, a security group whose tunnel port accepts only the other edges, and a route
# entry with the instance as next hop in every route table for every remote route. The user
# data comes from ../core: it holds no secret; the edge key is made on the instance.

locals {
  tags = merge(var.tags, { Name = "isthmus-${var.name}" })
}

resource "alicloud_eip_address" "edge" {
  address_name         = "isthmus-${var.name}"
  bandwidth            = tostring(var.eip_bandwidth)
  internet_charge_type = "PayByTraffic"
  payment_type         = "PayAsYouGo"
  tags                 = local.tags
}

module "core" {
  source = "../core"

  name                  = var.name
  routes                = var.routes
  remote_routes         = var.remote_routes
  route_tables          = var.route_tables
  controllers           = var.controllers
  controller_public_key = var.controller_public_key
  endpoint_address      = alicloud_eip_address.edge.ip_address
  listen_port           = var.listen_port
  tun_address           = var.tun_address
  persistent_keepalive  = var.persistent_keepalive
  isthmus_pip_spec      = var.isthmus_pip_spec
}

resource "alicloud_security_group" "edge" {
  security_group_name = "isthmus-${var.name}"
  description         = "isthmus edge ${var.name}: tunnel from the peer edges, forwarding for the VPC"
  vpc_id              = var.vpc_id
  tags                = local.tags
}

# The tunnel: UDP listen_port from each peer edge's address, nothing else.
resource "alicloud_security_group_rule" "tunnel" {
  for_each = toset(var.peer_addresses)

  security_group_id = alicloud_security_group.edge.id
  description       = "isthmus tunnel from peer edge ${each.value}"
  type              = "ingress"
  ip_protocol       = "udp"
  nic_type          = "intranet"
  policy            = "accept"
  port_range        = "${var.listen_port}/${var.listen_port}"
  cidr_ip           = "${each.value}/32"
}

# Forwarding: packets from the site's own ranges to remote routes enter the instance.
resource "alicloud_security_group_rule" "site_ipv4" {
  for_each = toset([for r in var.routes : r if !strcontains(r, ":")])

  security_group_id = alicloud_security_group.edge.id
  description       = "traffic from ${each.value} to forward to the other sites"
  type              = "ingress"
  ip_protocol       = "all"
  nic_type          = "intranet"
  policy            = "accept"
  port_range        = "-1/-1"
  cidr_ip           = each.value
}

resource "alicloud_security_group_rule" "site_ipv6" {
  for_each = toset([for r in var.routes : r if strcontains(r, ":")])

  security_group_id = alicloud_security_group.edge.id
  description       = "traffic from ${each.value} to forward to the other sites"
  type              = "ingress"
  ip_protocol       = "all"
  nic_type          = "intranet"
  policy            = "accept"
  port_range        = "-1/-1"
  ipv6_cidr_ip      = each.value
}

resource "alicloud_instance" "edge" {
  instance_name              = "isthmus-${var.name}"
  image_id                   = var.image_id
  instance_type              = var.instance_type
  vswitch_id                 = var.vswitch_id
  security_groups            = [alicloud_security_group.edge.id]
  key_name                   = var.key_name
  internet_max_bandwidth_out = 0
  user_data                  = base64encode(module.core.user_data)
  tags                       = local.tags
}

resource "alicloud_eip_association" "edge" {
  allocation_id = alicloud_eip_address.edge.id
  instance_id   = alicloud_instance.edge.id
  instance_type = "EcsInstance"
}

# Every (route table, remote route) pair: a route entry with the instance as next hop.
resource "alicloud_route_entry" "remote" {
  for_each = module.core.route_entries

  route_table_id        = each.value.route_table_id
  destination_cidrblock = each.value.destination
  nexthop_type          = "Instance"
  nexthop_id            = alicloud_instance.edge.id
}
