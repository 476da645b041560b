"""This scenario's declarations for its verify steps; the probes and playbook runs are shared with the other
scenarios (extensions/molecule/shared).

Every connection is made from the lab's client namespace (the public side), as an outside user
would; the hypervisors are only read (iptables-save, files) through testinfra's ansible backend.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared'))
# pylint: disable-next=wrong-import-position,unused-import  # re-exported to this scenario's tests
from lab_client import (BRIDGE, CLIENT, CLIENT2, CLIENT_NS, PROJECT, client, probe, probe_until,  # noqa: E402,F401
                        run_doctor, run_playbook, run_verify_playbook)

ADMIN_RULES = os.path.join(PROJECT, 'tests', 'lab', 'rootfs', 'etc', 'iptables', 'rules.v4')

HV = {'hv1': '203.0.113.11', 'hv2': '203.0.113.12'}

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
ALLOW_LISTED = [('hv1', 2222, 'web01')]                # sources: [203.0.113.50/32]
HOST_SERVICE = ['hv1', 'hv2']                          # the host's own :80 (kvmlab-web)
GUESTS_BEHIND = [('hv1', 'web01'), ('hv2', 'web02')]   # at 192.168.122.10, not reachable but through a forward


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


@pytest.fixture(scope='session')
def admin_rules():
    with open(ADMIN_RULES) as handle:
        return handle.read()
