"""What every Molecule scenario's verify steps share: probes from the lab's client and the collection's
playbooks run with Molecule's inventory. Each scenario's tests/conftest.py puts this directory on
sys.path and declares what it exposed (HV, DECLARED, ...); reachability.py holds the tests they share.

Every connection is made from the lab's client namespace (the public side), as an outside user would.
"""
import json
import os
import subprocess
import time

PROJECT = os.environ.get('MOLECULE_PROJECT_DIRECTORY', os.path.join(os.path.dirname(__file__), '../../..'))
LAB_NAME = os.environ.get('KVMLAB_NAME', 'kvmmol')
CLIENT_NS = f'{LAB_NAME}-cli'
PROBE = os.path.join(PROJECT, 'tests', 'netns', 'probe.py')
# the lab's addresses (tests/lab/lab.py)
CLIENT, CLIENT2, CLIENT6, BRIDGE = '203.0.113.50', '203.0.113.51', '2001:db8:113::50', '192.168.122.1'


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
