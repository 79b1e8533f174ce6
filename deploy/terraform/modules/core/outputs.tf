output "route_entries" {
  description = "Every (route table, remote route) pair: a map of \"<route table key> <route>\" to {route_table_id, destination, ipv6}. Cloud modules make one route per entry, pointing at the edge."
  value       = local.route_entries
}

output "user_data" {
  description = "The cloud-init user data (#cloud-config): installs isthmus into /opt/isthmus/venv, writes /etc/isthmus/edge.toml and the unit, makes the key on the host and starts the edge. Holds no secret."
  value       = local.user_data
}

output "edge_config" {
  description = "The edge config written to /etc/isthmus/edge.toml."
  value       = local.edge_config
}

output "endpoint" {
  description = "The endpoint other edges send to, \"ip:port\" or \"[ipv6]:port\"."
  value       = local.endpoint
}

output "listen_port" {
  description = "The UDP port of the tunnel."
  value       = var.listen_port
}

output "public_key_path" {
  description = "Where the host keeps the edge's public key (for the controller's [[edges]] public_key); the console shows it too."
  value       = local.public_key_path
}
