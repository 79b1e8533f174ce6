output "endpoint" {
  description = "The edge's endpoint (Elastic IP:port)."
  value       = module.core.endpoint
}

output "public_ip" {
  description = "The Elastic IP: give it to the other edges' peer_addresses."
  value       = aws_eip.edge.public_ip
}

output "instance_id" {
  description = "The edge instance; its public key is on its console (`aws ec2 get-console-output`) and in /etc/isthmus/edge.pub."
  value       = aws_instance.edge.id
}

output "network_interface_id" {
  description = "The interface every route points at."
  value       = aws_network_interface.edge.id
}

output "security_group_id" {
  description = "The edge's security group."
  value       = aws_security_group.edge.id
}
