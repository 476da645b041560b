"""Shared by the Molecule verify steps: probes from the lab's client, and what was declared.

Every connection is made from the lab's client namespace (the public side), as an outside user
would; the hypervisors are only read (iptables-save, files) through testinfra's ansible backend.
"""
import json
import os
import subprocess
import time

import pytest

PROJECT = os.environ.get('MOLECULE_PROJECT_DIRECTORY', os.path.join(os.path.dirname(__file__), '../../../..'))
LAB_NAME = os.environ.get('KVMLAB_NAME', 'kvmmol')
CLIENT_NS = f'{LAB_NAME}-cli'
PROBE = os.path.join(PROJECT, 'tests', 'netns', 'probe.py')
ADMIN_RULES = os.path.join(PROJECT, 'tests', 'lab', 'rootfs', 'etc', 'iptables', 'rules.v4')

HV = {'hv1': '203.0.113.11', 'hv2': '203.0.113.12'}
CLIENT, CLIENT2, BRIDGE = '203.0.113.50', '203.0.113.51', '192.168.122.1'

# (hypervisor, proto, public port, guest that must answer, address the guest must see)
DECLARED = [
    ('hv1', 'tcp', 8080, 'web01', CLIENT),     # masquerade auto: the guest sees the client
    ('hv1', 'tcp', 2222, 'web01', CLIENT),     # allow-listed source
    ('hv1', 'udp', 5353, 'web01', CLIENT),
    ('hv1', 'tcp', 10000, 'web01', CLIENT),    # first and last port of the range
    ('hv1', 'tcp', 10009, 'web01', CLIENT),
    ('hv1', 'tcp', 8443, 'app01', CLIENT),     # guest-side inventory, address found in libvirt
    ('hv2', 'tcp', 8080, 'web02', BRIDGE),     # masquerade always: the guest sees the bridge
    ('hv2', 'udp', 5353, 'web02', BRIDGE),
    ('hv2', 'tcp', 8443, 'app02', CLIENT),     # masquerade never
]
# Ports the guests listen on (and the host does not) that nobody declared.
UNDECLARED = [('hv1', 'tcp', 8000), ('hv1', 'tcp', 443), ('hv1', 'tcp', 10010), ('hv2', 'tcp', 2222),
              ('hv2', 'tcp', 10000), ('hv2', 'udp', 53)]


def probe(proto, address, port, source=None, timeout=2.0):
    cmd = ['ip', 'netns', 'exec', CLIENT_NS, 'python3', PROBE, proto, address, str(port), '--timeout', str(timeout)]
    if source:
        cmd += ['--source', source]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def probe_until(expected, proto, address, port, source=None, seconds=20):
    """Probe until the expected answer arrives (guests may still be settling after a side effect)."""
    deadline = time.monotonic() + seconds
    while True:
        answer = probe(proto, address, port, source)
        if answer == expected or time.monotonic() > deadline:
            return answer
        time.sleep(1)


def client(*cmd):
    return subprocess.run(['ip', 'netns', 'exec', CLIENT_NS, *cmd], capture_output=True, text=True, check=True)


def saved_rules(host):
    """{table: [rule lines]} from the hypervisor's iptables-save."""
    tables, table = {}, None
    for line in host.check_output('iptables-save').splitlines():
        if line.startswith('*'):
            table = line[1:]
            tables[table] = []
        elif line.startswith('-A '):
            tables[table].append(line)
    return tables


def run_playbook(playbook, report, *extra, netns=None):
    """ansible-playbook kvmnet.nat.PLAYBOOK with Molecule's inventory (in the client namespace when
    ``netns`` names it); returns the process and the JSON report it wrote to ``report`` (none when None)."""
    inventory = os.path.join(os.environ['MOLECULE_EPHEMERAL_DIRECTORY'], 'inventory')
    cmd = ['ansible-playbook', '-i', inventory, f'kvmnet.nat.{playbook}', *extra]
    if report is not None:
        cmd += ['-e', f'{playbook}_report={report}']
    proc = subprocess.run((['ip', 'netns', 'exec', netns] if netns else []) + cmd,
                          capture_output=True, text=True, check=False, timeout=300,
                          env=dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0'))
    rows = json.loads(report.read_text()) if report is not None and report.exists() else []
    return proc, rows


def run_verify_playbook(tmp_path, *extra):
    """ansible-playbook kvmnet.nat.verify from the client namespace, with Molecule's inventory."""
    return run_playbook('verify', tmp_path / 'report.json', *extra, netns=CLIENT_NS)


def run_doctor(tmp_path, *extra):
    """ansible-playbook kvmnet.nat.doctor on the hypervisors (it reads them, it changes nothing)."""
    report = tmp_path / 'doctor.json'
    if report.exists():
        report.unlink()
    return run_playbook('doctor', report, *extra)


@pytest.fixture(scope='session')
def admin_rules():
    with open(ADMIN_RULES) as handle:
        return handle.read()
