# Joins two VPCs and an office:
#
#   VPC A (AWS)      10.10.0.0/16   edge vpc-a   TUN 10.10.255.254/32
#   VPC B (Alibaba)  10.20.0.0/16   edge vpc-b   TUN 10.20.255.254/32
#   office LAN       192.168.10.0/24 edge office TUN 192.168.10.254/32
#
# Each cloud edge gets an Elastic IP; each security group accepts the tunnel port only from
# the other two edges. Route tables of A and B send the other two sites to their edge. The
# office edge is a host you run: this configuration renders its cloud-init user data (for a
# VM with the NoCloud datasource) and its config; point the office router's routes for
# 10.10.0.0/16 and 10.20.0.0/16 at that host.
#
# After apply, add each edge's public key (the line "isthmus edge NAME public_key=..." on its
# console, or /etc/isthmus/edge.pub on the host) to the controller's [[edges]] and reload the
# controller (`systemctl reload isthmus-controller`).

locals {
  sites = {
    vpc-a  = { routes = ["10.10.0.0/16"], tun_address = "10.10.255.254/32" }
    vpc-b  = { routes = ["10.20.0.0/16"], tun_address = "10.20.255.254/32" }
    office = { routes = ["192.168.10.0/24"], tun_address = "192.168.10.254/32" }
  }
  # Every route of every site but the named one.
  remote_routes = {
    for name, _ in local.sites : name => flatten([
      for other, site in local.sites : site.routes if other != name
    ])
  }
}

module "vpc_a" {
  source = "../../modules/aws-edge"

  name                  = "vpc-a"
  vpc_id                = var.aws_vpc_id
  subnet_id             = var.aws_subnet_id
  ami_id                = var.aws_ami_id
  routes                = local.sites["vpc-a"].routes
  remote_routes         = local.remote_routes["vpc-a"]
  route_tables          = var.aws_route_tables
  peer_addresses        = [module.vpc_b.public_ip, var.office_public_address]
  controllers           = var.controllers
  controller_public_key = var.controller_public_key
  tun_address           = local.sites["vpc-a"].tun_address
  isthmus_pip_spec      = var.isthmus_pip_spec
}

module "vpc_b" {
  source = "../../modules/alicloud-edge"

  name                  = "vpc-b"
  vpc_id                = var.alicloud_vpc_id
  vswitch_id            = var.alicloud_vswitch_id
  image_id              = var.alicloud_image_id
  routes                = local.sites["vpc-b"].routes
  remote_routes         = local.remote_routes["vpc-b"]
  route_tables          = var.alicloud_route_tables
  peer_addresses        = [module.vpc_a.public_ip, var.office_public_address]
  controllers           = var.controllers
  controller_public_key = var.controller_public_key
  tun_address           = local.sites["vpc-b"].tun_address
  isthmus_pip_spec      = var.isthmus_pip_spec
}

module "office" {
  source = "../../modules/core"

  name                  = "office"
  routes                = local.sites["office"].routes
  remote_routes         = local.remote_routes["office"]
  controllers           = var.controllers
  controller_public_key = var.controller_public_key
  endpoint_address      = var.office_public_address
  tun_address           = local.sites["office"].tun_address
  # Behind the office NAT: keep the mapping open.
  persistent_keepalive = 25
  isthmus_pip_spec     = var.isthmus_pip_spec
}
