# The provider-free core of an isthmus edge: the (route table x remote route) matrix, the
# edge config and the cloud-init user data that installs and starts the edge.
#
# Rules:
# - No private key ever passes through Terraform: the user data runs `isthmus keygen` on the
#   host, so the key exists only there (not in state, plan or user data). Only the public key
#   leaves the host: /etc/isthmus/edge.pub and one line on the console.
# - The unit file is deploy/systemd/isthmus-edge.service itself (read from this repository),
#   so the hosts run exactly the unit that CI verifies.

locals {
  venv             = "/opt/isthmus/venv"
  isthmus          = "${local.venv}/bin/isthmus"
  config_path      = "/etc/isthmus/edge.toml"
  public_key_path  = "/etc/isthmus/edge.pub"
  state_dir        = "/var/lib/isthmus"
  private_key_path = "${local.state_dir}/private.key"
  admin_socket     = "/run/isthmus/admin.sock"
  unit_name        = "isthmus-edge.service"
  unit_text        = file("${path.module}/../../../systemd/${local.unit_name}")

  endpoint = strcontains(var.endpoint_address, ":") ? "[${var.endpoint_address}]:${var.listen_port}" : "${var.endpoint_address}:${var.listen_port}"

  # One entry per (route table, remote route), keyed "<route table key> <route>" so the
  # keys are known at plan time even when the route table ids are not.
  route_matrix = flatten([
    for table_key, table_id in var.route_tables : [
      for route in var.remote_routes : {
        key            = "${table_key} ${route}"
        route_table_id = table_id
        destination    = route
        ipv6           = strcontains(route, ":")
      }
    ]
  ])
  route_entries = { for e in local.route_matrix : e.key => e }

  # TOML strings and arrays of strings are written with jsonencode: a JSON string is a valid
  # TOML basic string.
  edge_config = <<-TOML
    # isthmus edge config, rendered by deploy/terraform/modules/core.
    name = ${jsonencode(var.name)}
    private_key_file = ${jsonencode(local.private_key_path)}
    controller = ${jsonencode(var.controllers)}
    controller_public_key = ${jsonencode(var.controller_public_key)}
    listen = ${jsonencode("0.0.0.0:${var.listen_port}")}
    endpoint = ${jsonencode(local.endpoint)}
    routes = ${jsonencode(var.routes)}
    state_dir = ${jsonencode(local.state_dir)}
    admin_socket = ${jsonencode(local.admin_socket)}

    [tun]
    name = ${jsonencode(var.tun_name)}
    address = ${jsonencode(var.tun_address)}
    mtu = ${var.tun_mtu}

    [tunnel]
    persistent_keepalive = ${var.persistent_keepalive}
  TOML

  # Runs once, as root, on first boot. Every command is an argv list (no shell) except the
  # key step, whose shell text holds only fixed paths.
  keygen_script = join(" ", [
    "test -e ${local.private_key_path}",
    "|| ${local.isthmus} keygen --out ${local.private_key_path} > ${local.public_key_path};",
    "echo \"isthmus edge ${var.name} public_key=$(cat ${local.public_key_path})\"",
  ])

  cloud_config = {
    package_update = true
    packages       = ["python3-venv"]
    write_files = [
      {
        path        = local.config_path
        owner       = "root:root"
        permissions = "0644"
        content     = local.edge_config
      },
      {
        path        = "/etc/systemd/system/${local.unit_name}"
        owner       = "root:root"
        permissions = "0644"
        content     = local.unit_text
      },
    ]
    runcmd = [
      ["python3", "-m", "venv", local.venv],
      ["${local.venv}/bin/pip", "install", "--no-cache-dir", var.isthmus_pip_spec],
      ["install", "-d", "-m", "0700", "-o", "root", "-g", "root", local.state_dir],
      ["sh", "-c", local.keygen_script],
      [local.isthmus, "config", "check", local.config_path, "--kind", "edge"],
      ["systemctl", "daemon-reload"],
      ["systemctl", "enable", "--now", local.unit_name],
    ]
  }

  user_data = "#cloud-config\n${yamlencode(local.cloud_config)}"
}
