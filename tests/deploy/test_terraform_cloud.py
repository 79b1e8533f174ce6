"""The AWS and Alibaba Cloud edge modules and the example, checked with python-hcl2.

Their providers cannot be downloaded here, so `terraform validate` cannot run on them
(`terraform fmt -check` does, in test_terraform_core.py). These tests parse the HCL and
check the invariants that matter: every (route table, remote route) pair of the core's
matrix becomes a route to the edge, the tunnel port is open only to the peer edges'
addresses (never 0.0.0.0/0), IMDSv2 is required, source/dest check is off, the user data is
the core's, and every module call passes each required variable and only declared ones.
Each checker returns a list of problems; the last tests show they find seeded ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "deploy" / "terraform" / "modules"
EXAMPLE = ROOT / "deploy" / "terraform" / "examples" / "two-vpcs-and-office"
OPEN = ("0.0.0.0/0", "::/0")

Module = dict[str, dict[Any, dict[str, Any]]]


def unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse_text(texts: list[str]) -> Module:
    """Blocks of one module: resource[(type, name)], variable[name], module[name], ..."""
    module: Module = {"resource": {}, "variable": {}, "module": {}, "output": {}}
    for text in texts:
        doc = hcl2.loads(text)
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    module["resource"][(unquote(rtype), unquote(name))] = body
        for kind in ("variable", "module", "output"):
            for block in doc.get(kind, []):
                for name, body in block.items():
                    module[kind][unquote(name)] = body
    return module


def texts_of(directory: Path) -> list[str]:
    return [p.read_text() for p in sorted(directory.glob("*.tf"))]


def parse(directory: Path) -> Module:
    return parse_text(texts_of(directory))


def resources(module: Module, rtype: str) -> dict[str, dict[str, Any]]:
    return {name: body for (t, name), body in module["resource"].items() if t == rtype}


def required(module: Module) -> set[str]:
    return {name for name, body in module["variable"].items() if "default" not in body}


def call_problems(directory: Path, texts: list[str]) -> list[str]:
    """Every module call passes each required variable and only declared ones; every
    var.X is declared; every module.M.O names an output of M."""
    module = parse_text(texts)
    problems = []
    for name, body in module["module"].items():
        target = parse((directory / unquote(body["source"])).resolve())
        passed = {k for k in body if k != "source" and not k.startswith("__")}
        if missing := required(target) - passed:
            problems.append(f"module {name}: missing {sorted(missing)}")
        if unknown := passed - set(target["variable"]):
            problems.append(f"module {name}: unknown {sorted(unknown)}")
        for output in re.findall(rf"module\.{name}\.(\w+)", "\n".join(texts)):
            if output not in target["output"]:
                problems.append(f"module.{name}.{output} is no output of {body['source']}")
    used = set(re.findall(r"\bvar\.(\w+)", "\n".join(texts)))
    if undeclared := used - set(module["variable"]):
        problems.append(f"undeclared variables {sorted(undeclared)}")
    return problems


def aws_problems(texts: list[str]) -> list[str]:
    m = parse_text(texts)
    problems = []
    routes = resources(m, "aws_route")
    if set(routes) != {"remote"}:
        problems.append(f"expected one aws_route 'remote', got {sorted(routes)}")
    route = routes.get("remote", {})
    expected = {
        "for_each": "${module.core.route_entries}",
        "route_table_id": "${each.value.route_table_id}",
        "network_interface_id": "${aws_network_interface.edge.id}",
        "destination_cidr_block": "${each.value.ipv6 ? null : each.value.destination}",
        "destination_ipv6_cidr_block": "${each.value.ipv6 ? each.value.destination : null}",
    }
    for key, value in expected.items():
        if route.get(key) != value:
            problems.append(f"aws_route.remote.{key} = {route.get(key)!r}; want {value!r}")
    eni = resources(m, "aws_network_interface").get("edge", {})
    if eni.get("source_dest_check") is not False:
        problems.append("aws_network_interface.edge: source_dest_check must be false")
    template = resources(m, "aws_launch_template").get("edge", {})
    metadata = (template.get("metadata_options") or [{}])[0]
    if unquote(metadata.get("http_tokens")) != "required":
        problems.append("aws_launch_template.edge: metadata_options.http_tokens must be required")
    if template.get("user_data") != "${base64encode(module.core.user_data)}":
        problems.append("aws_launch_template.edge: user_data must be the core's")
    nic = (template.get("network_interfaces") or [{}])[0]
    if nic.get("network_interface_id") != "${aws_network_interface.edge.id}":
        problems.append("aws_launch_template.edge: must use the edge's interface")
    for name, sg in resources(m, "aws_security_group").items():
        if "ingress" in sg:
            problems.append(f"aws_security_group.{name}: no inline ingress; use rule resources")
    if resources(m, "aws_security_group_rule"):
        problems.append("use aws_vpc_security_group_ingress_rule, not aws_security_group_rule")
    for name, rule in resources(m, "aws_vpc_security_group_ingress_rule").items():
        problems += ingress_problems(
            f"aws_vpc_security_group_ingress_rule.{name}",
            protocol=unquote(rule.get("ip_protocol")),
            sources=[rule.get("cidr_ipv4"), rule.get("cidr_ipv6")],
            for_each=rule.get("for_each"),
            ports=(rule.get("from_port"), rule.get("to_port")),
        )
    return problems


def alicloud_problems(texts: list[str]) -> list[str]:
    m = parse_text(texts)
    problems = []
    entries = resources(m, "alicloud_route_entry")
    if set(entries) != {"remote"}:
        problems.append(f"expected one alicloud_route_entry 'remote', got {sorted(entries)}")
    entry = entries.get("remote", {})
    expected = {
        "for_each": "${module.core.route_entries}",
        "route_table_id": "${each.value.route_table_id}",
        "destination_cidrblock": "${each.value.destination}",
        "nexthop_type": '"Instance"',
        "nexthop_id": "${alicloud_instance.edge.id}",
    }
    for key, value in expected.items():
        if entry.get(key) != value:
            problems.append(f"alicloud_route_entry.remote.{key} = {entry.get(key)!r}")
    instance = resources(m, "alicloud_instance").get("edge", {})
    if instance.get("user_data") != "${base64encode(module.core.user_data)}":
        problems.append("alicloud_instance.edge: user_data must be the core's")
    association = resources(m, "alicloud_eip_association").get("edge", {})
    if association.get("instance_id") != "${alicloud_instance.edge.id}":
        problems.append("alicloud_eip_association.edge must attach the EIP to the instance")
    for name, rule in resources(m, "alicloud_security_group_rule").items():
        if unquote(rule.get("type")) != "ingress":
            continue
        low, _, high = unquote(rule.get("port_range", "")).partition("/")
        problems += ingress_problems(
            f"alicloud_security_group_rule.{name}",
            protocol=unquote(rule.get("ip_protocol")),
            sources=[rule.get("cidr_ip"), rule.get("ipv6_cidr_ip")],
            for_each=rule.get("for_each"),
            ports=(low, high),
        )
    return problems


def ingress_problems(
    where: str, protocol: str, sources: list[Any], for_each: Any, ports: tuple[Any, Any]
) -> list[str]:
    """UDP only from each peer address as a /32 on the tunnel port; all protocols only from
    the site's own routes (which the core refuses as /0); never 0.0.0.0/0 or ::/0."""
    problems = []
    given = [unquote(s) for s in sources if s is not None]
    if any(s in OPEN for s in given):
        problems.append(f"{where}: open to {given}")
    if protocol == "udp":
        if for_each != "${toset(var.peer_addresses)}" or given != ["${each.value}/32"]:
            problems.append(f"{where}: UDP must come from each of var.peer_addresses as /32")
        if ports != ("${var.listen_port}", "${var.listen_port}"):
            problems.append(f"{where}: UDP must be the tunnel port only, got {ports}")
    elif protocol in ("-1", "all"):
        if not str(for_each).startswith("${toset([for r in var.routes :"):
            problems.append(f"{where}: all protocols only from var.routes")
    else:
        problems.append(f"{where}: unexpected protocol {protocol!r}")
    return problems


def test_aws_module_invariants() -> None:
    assert aws_problems(texts_of(MODULES / "aws-edge")) == []


def test_alicloud_module_invariants() -> None:
    assert alicloud_problems(texts_of(MODULES / "alicloud-edge")) == []


def test_peer_addresses_refuse_prefixes() -> None:
    for name in ("aws-edge", "alicloud-edge"):
        variable = parse(MODULES / name)["variable"]["peer_addresses"]
        condition = variable["validation"][0]["condition"]
        assert 'cidrhost("${a}/32", 0) == a' in condition
        assert 'a != "0.0.0.0"' in condition


def test_module_calls_are_complete() -> None:
    for directory in (MODULES / "aws-edge", MODULES / "alicloud-edge", EXAMPLE):
        assert call_problems(directory, texts_of(directory)) == [], directory


def test_example_joins_two_vpcs_and_an_office() -> None:
    example = parse(EXAMPLE)
    calls = {name: unquote(body["source"]) for name, body in example["module"].items()}
    assert calls == {
        "vpc_a": "../../modules/aws-edge",
        "vpc_b": "../../modules/alicloud-edge",
        "office": "../../modules/core",
    }
    modules = example["module"]
    assert modules["vpc_a"]["peer_addresses"] == [
        "${module.vpc_b.public_ip}",
        "${var.office_public_address}",
    ]
    assert modules["vpc_b"]["peer_addresses"] == [
        "${module.vpc_a.public_ip}",
        "${var.office_public_address}",
    ]


def test_checkers_find_seeded_problems() -> None:
    aws = texts_of(MODULES / "aws-edge")
    open_udp = [t.replace('"${each.value}/32"', '"0.0.0.0/0"') for t in aws]
    assert any("open to ['0.0.0.0/0']" in p for p in aws_problems(open_udp))
    no_imds = [
        t.replace('http_tokens                 = "required"', 'http_tokens = "optional"')
        for t in aws
    ]
    assert any("http_tokens" in p for p in aws_problems(no_imds))
    check_on = [t.replace("source_dest_check = false", "source_dest_check = true") for t in aws]
    assert any("source_dest_check" in p for p in aws_problems(check_on))
    ali = texts_of(MODULES / "alicloud-edge")
    wrong_hop = [
        t.replace('nexthop_type          = "Instance"', 'nexthop_type = "HaVip"') for t in ali
    ]
    assert any("nexthop_type" in p for p in alicloud_problems(wrong_hop))
    wide_port = [t.replace('"${var.listen_port}/${var.listen_port}"', '"1/65535"') for t in ali]
    assert any("tunnel port only" in p for p in alicloud_problems(wide_port))
    missing = [t.replace("  tun_address           = var.tun_address\n", "") for t in aws]
    assert any("missing ['tun_address']" in p for p in call_problems(MODULES / "aws-edge", missing))
