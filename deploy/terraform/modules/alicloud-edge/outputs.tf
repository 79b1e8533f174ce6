output "endpoint" {
  description = "The edge's endpoint (Elastic IP:port)."
  value       = module.core.endpoint
}

output "public_ip" {
  description = "The Elastic IP: give it to the other edges' peer_addresses."
  value       = alicloud_eip_address.edge.ip_address
}

output "instance_id" {
  description = "The edge instance; its public key is in /etc/isthmus/edge.pub and on its console output."
  value       = alicloud_instance.edge.id
}

output "security_group_id" {
  description = "The edge's security group."
  value       = alicloud_security_group.edge.id
}
