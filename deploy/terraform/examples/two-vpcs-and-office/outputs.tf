output "controller_edges" {
  description = "The [[edges]] of the controller config, without public keys (read them from each edge's console or /etc/isthmus/edge.pub)."
  value = {
    for name, site in local.sites : name => { routes = site.routes }
  }
}

output "endpoints" {
  description = "Each edge's endpoint."
  value = {
    vpc-a  = module.vpc_a.endpoint
    vpc-b  = module.vpc_b.endpoint
    office = module.office.endpoint
  }
}

output "office_user_data" {
  description = "cloud-init user data for the office edge host (NoCloud seed)."
  value       = module.office.user_data
}

output "office_routes" {
  description = "Routes to add on the office router, via the office edge host."
  value       = local.remote_routes["office"]
}
