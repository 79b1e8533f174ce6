"""End to end: the operator's commands against the demo mesh (tests/e2e/test_mesh.py draws
it): `isthmus status`, `explain`, `routes`, `edges` with and without --json, their exit
codes on a healthy mesh, `explain` agreeing with where traffic goes, and no private key
(the key files' text, the raw key as base64 and as hex) in anything any command prints.

    vpc-a edge  --admin socket-->  isthmus status / explain     (run in vpc-a's namespace)
    controller  --admin socket-->  isthmus routes / edges       (run on the host)
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from isthmus_lab.commands import ISTHMUS, wait_until
from isthmus_lab.mesh import Mesh
from isthmus_lab.netns import host_run
from isthmus_lab.topology import DEMO

pytestmark = pytest.mark.netns

SITES = DEMO.site_names


def on_edge(mesh: Mesh, site: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """`isthmus ARGV --socket <site's admin socket>` in the site's edge namespace."""
    sock = str(mesh.edge_paths(site).admin_socket)
    return mesh.lab.run(mesh.edge_ns(site), [*ISTHMUS, *argv, "--socket", sock], check=False)


def on_controller(mesh: Mesh, *argv: str) -> subprocess.CompletedProcess[str]:
    sock = str(mesh.controller_paths(0).admin_socket)
    return host_run([*ISTHMUS, *argv, "--socket", sock], check=False)


def test_status_of_every_edge_is_healthy(mesh: Mesh) -> None:
    for site in SITES:
        done = on_edge(mesh, site, "status", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        doc = json.loads(done.stdout)
        assert doc["edge"] == site and doc["controller"]["connected"] is True
        assert doc["routes"] and all(r["installed"] for r in doc["routes"])
        text = on_edge(mesh, site, "status")
        assert text.returncode == 0, text.stderr
        assert text.stdout.startswith(f"edge: {site}\n") and "\x1b[" not in text.stdout
        assert "NOT installed" not in text.stdout and "problems:" not in text.stdout


def test_explain_agrees_with_where_traffic_goes(mesh: Mesh) -> None:
    target = DEMO.site("vpc-b").workload_ip
    assert mesh.ping("vpc-a", target).ok  # a session with vpc-b, whatever came before
    done = on_edge(mesh, "vpc-a", "explain", target, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["verdict"] == "remote" and doc["edge"]["name"] == "vpc-b"
    assert doc["route"]["match"] == {"route": "10.245.0.0/16", "edge": "vpc-b"}
    assert doc["installed"] is True and "10.245.0.0/16" in mesh.kernel_routes("vpc-a")
    assert doc["lease"]["verified"] is True and doc["lease"]["expires_in_seconds"] > 60
    assert doc["health"]["session"]["established"] is True
    assert doc["health"]["controller"]["connected"] is True
    assert doc["edge"]["endpoint_in_use"] == mesh.endpoint("vpc-b")
    assert doc["problems"] == []

    local = on_edge(mesh, "vpc-a", "explain", DEMO.site("vpc-a").workload_ip)
    assert local.returncode == 0, local.stderr
    assert "  verdict: local: inside this edge's own route 10.244.0.0/16" in local.stdout
    assert local.stdout.splitlines()[-1] == "problems: none"
    elsewhere = on_edge(mesh, "vpc-a", "explain", "192.0.2.1", "--json")
    assert elsewhere.returncode == 0 and json.loads(elsewhere.stdout)["verdict"] == "no_route"
    bad = on_edge(mesh, "vpc-a", "explain", "10.245.0.0/16")
    assert (bad.returncode, bad.stdout) == (1, "")
    assert "is a network, not an address" in bad.stderr


def test_routes_and_edges_on_a_healthy_mesh_exit_0(mesh: Mesh) -> None:
    routes = on_controller(mesh, "routes", "--json")
    assert routes.returncode == 0, routes.stdout + routes.stderr
    assert {r["state"] for r in json.loads(routes.stdout)["routes"]} == {"serving"}

    def edges_current() -> bool:
        return on_controller(mesh, "edges").returncode == 0

    # every edge reports the version it applied shortly after it applies it
    wait_until(edges_current, 10.0, "every edge reports the current map version")
    edges = on_controller(mesh, "edges", "--json")
    assert edges.returncode == 0, edges.stderr
    assert sorted(e["name"] for e in json.loads(edges.stdout)["edges"]) == sorted(SITES)


def _secrets(paths: list[Path]) -> list[str]:
    """Every private key file as its text, and its raw bytes as base64 and as hex."""
    found = []
    for path in paths:
        text = path.read_text().strip()
        raw = base64.b64decode(text)
        assert len(raw) == 32, path
        found += [text, base64.b64encode(raw).decode(), raw.hex(), raw.hex().upper()]
    return found


def test_no_command_prints_a_private_key(mesh: Mesh, tmp_path: Path) -> None:
    outputs: list[tuple[str, str]] = []

    def record(argv: tuple[str, ...], done: subprocess.CompletedProcess[str]) -> None:
        assert done.returncode in (0, 2), f"{argv}: {done.stderr}"
        outputs.append((" ".join(argv), done.stdout + done.stderr))

    for form in ((), ("--json",)):
        for site in SITES:
            record(("status", *form), on_edge(mesh, site, "status", *form))
            for address in ("10.245.1.10", "10.244.1.10", "172.16.0.10", "192.0.2.1"):
                argv = ("explain", address, *form)
                record(argv, on_edge(mesh, site, *argv))
        for argv in (("routes",), ("routes", "--history"), ("edges",)):
            record((*argv, *form), on_controller(mesh, *argv, *form))
        for config in (mesh.edge_paths("vpc-a").config, mesh.controller_paths(0).config):
            argv = ("config", "check", str(config), *form)
            record(argv, host_run([*ISTHMUS, *argv], check=False))
        record(("version", *form), host_run([*ISTHMUS, "version", *form], check=False))
        for kind in ((), ("--controller",)):
            out = tmp_path / f"key{len(form)}{len(kind)}"
            argv = ("keygen", *kind, "--out", str(out), *form)
            record(argv, host_run([*ISTHMUS, *argv], check=False))
    keys = [mesh.edge_paths(site).private_key for site in SITES]
    keys += [mesh.signing_key_path, *sorted(tmp_path.glob("key*"))]
    secrets = _secrets(keys)
    assert len(outputs) == 2 * (len(SITES) * 5 + 3 + 2 + 1 + 2)
    for argv, text in outputs:
        assert text.strip(), argv
        for secret in secrets:
            assert secret not in text, f"'isthmus {argv}' printed a private key"
