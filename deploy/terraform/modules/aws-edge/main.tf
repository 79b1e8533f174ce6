# An isthmus edge in an AWS VPC: an instance behind its own network interface (source/dest
# check off, so it may forward for the VPC), an Elastic IP as its endpoint, a security group
# whose tunnel port accepts only the other edges, and a route to the interface in every
# route table for every remote route. The user data comes from ../core: it holds no secret;
# the edge key is made on the instance.

locals {
  tags = merge(var.tags, { Name = "isthmus-${var.name}" })
}

resource "aws_eip" "edge" {
  domain = "vpc"
  tags   = local.tags
}

module "core" {
  source = "../core"

  name                  = var.name
  routes                = var.routes
  remote_routes         = var.remote_routes
  route_tables          = var.route_tables
  controllers           = var.controllers
  controller_public_key = var.controller_public_key
  endpoint_address      = aws_eip.edge.public_ip
  listen_port           = var.listen_port
  tun_address           = var.tun_address
  persistent_keepalive  = var.persistent_keepalive
  isthmus_pip_spec      = var.isthmus_pip_spec
}

resource "aws_security_group" "edge" {
  name_prefix = "isthmus-${var.name}-"
  description = "isthmus edge ${var.name}: tunnel from the peer edges, forwarding for the VPC"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

# The tunnel: UDP listen_port from each peer edge's address, nothing else.
resource "aws_vpc_security_group_ingress_rule" "tunnel" {
  for_each = toset(var.peer_addresses)

  security_group_id = aws_security_group.edge.id
  description       = "isthmus tunnel from peer edge ${each.value}"
  ip_protocol       = "udp"
  from_port         = var.listen_port
  to_port           = var.listen_port
  cidr_ipv4         = "${each.value}/32"
  tags              = local.tags
}

# Forwarding: packets from the site's own ranges to remote routes enter the instance.
resource "aws_vpc_security_group_ingress_rule" "site_ipv4" {
  for_each = toset([for r in var.routes : r if !strcontains(r, ":")])

  security_group_id = aws_security_group.edge.id
  description       = "traffic from ${each.value} to forward to the other sites"
  ip_protocol       = "-1"
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "site_ipv6" {
  for_each = toset([for r in var.routes : r if strcontains(r, ":")])

  security_group_id = aws_security_group.edge.id
  description       = "traffic from ${each.value} to forward to the other sites"
  ip_protocol       = "-1"
  cidr_ipv6         = each.value
  tags              = local.tags
}

# Out: the peers, the controller, the package mirrors, and forwarded traffic to the site.
resource "aws_vpc_security_group_egress_rule" "all_ipv4" {
  security_group_id = aws_security_group.edge.id
  description       = "everything out"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "all_ipv6" {
  security_group_id = aws_security_group.edge.id
  description       = "everything out"
  ip_protocol       = "-1"
  cidr_ipv6         = "::/0"
  tags              = local.tags
}

resource "aws_network_interface" "edge" {
  subnet_id         = var.subnet_id
  security_groups   = [aws_security_group.edge.id]
  source_dest_check = false
  description       = "isthmus edge ${var.name}"
  tags              = local.tags
}

resource "aws_eip_association" "edge" {
  allocation_id        = aws_eip.edge.id
  network_interface_id = aws_network_interface.edge.id
}

resource "aws_launch_template" "edge" {
  name_prefix   = "isthmus-${var.name}-"
  image_id      = var.ami_id
  instance_type = var.instance_type
  key_name      = var.key_name
  user_data     = base64encode(module.core.user_data)

  # IMDSv2 only, one hop: nothing in a container or forwarded packet reaches the metadata.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  network_interfaces {
    device_index         = 0
    network_interface_id = aws_network_interface.edge.id
  }

  dynamic "iam_instance_profile" {
    for_each = var.iam_instance_profile_name == null ? [] : [var.iam_instance_profile_name]
    content {
      name = iam_instance_profile.value
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = local.tags
  }

  tags = local.tags
}

resource "aws_instance" "edge" {
  launch_template {
    id      = aws_launch_template.edge.id
    version = aws_launch_template.edge.latest_version
  }
  tags = local.tags
}

# Every (route table, remote route) pair: a route to the edge's interface.
resource "aws_route" "remote" {
  for_each = module.core.route_entries

  route_table_id              = each.value.route_table_id
  destination_cidr_block      = each.value.ipv6 ? null : each.value.destination
  destination_ipv6_cidr_block = each.value.ipv6 ? each.value.destination : null
  network_interface_id        = aws_network_interface.edge.id
}
