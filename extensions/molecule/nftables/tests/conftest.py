"""The nftables scenario's declarations for its verify steps (inventory/host_vars/hv1.yml); the probes,
the playbook runs and the reachability tests are shared with the other scenarios (extensions/molecule/shared).
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared'))
# pylint: disable-next=wrong-import-position,unused-import  # re-exported to this scenario's tests
from lab_client import BRIDGE, CLIENT, CLIENT6, client, probe, probe_until, run_playbook  # noqa: E402,F401

# one hypervisor, its two public addresses: "hv1" is its IPv4 address, "hv1/6" its IPv6 address
HV = {'hv1': '203.0.113.11', 'hv1/6': '2001:db8:113::11'}

# (public address, proto, public port, guest that must answer, address the guest must see)
DECLARED = [
    ('hv1', 'tcp', 8080, 'web01', CLIENT),      # masquerade auto: the guest sees the client
    ('hv1', 'tcp', 8081, 'web01', BRIDGE),      # masquerade always: the guest sees the bridge
    ('hv1', 'tcp', 2222, 'web01', CLIENT),      # allow-listed source
    ('hv1', 'udp', 5353, 'web01', CLIENT),
    ('hv1', 'tcp', 10000, 'web01', CLIENT),     # first and last port of the range
    ('hv1', 'tcp', 10009, 'web01', CLIENT),
    ('hv1/6', 'tcp', 8443, 'app01', CLIENT6),   # IPv6, in the same table
    ('hv1/6', 'udp', 5353, 'app01', CLIENT6),
]
# Ports the guests listen on (and the host does not) that nobody declared.
UNDECLARED = [('hv1', 'tcp', 8000), ('hv1', 'tcp', 443), ('hv1', 'tcp', 10010), ('hv1', 'tcp', 8443),
              ('hv1/6', 'tcp', 8000), ('hv1/6', 'tcp', 8080), ('hv1/6', 'udp', 53)]
ALLOW_LISTED = [('hv1', 2222, 'web01')]          # sources: [203.0.113.50/32]
HOST_SERVICE = ['hv1']                           # the host's own :80 (kvmlab-web, IPv4)
GUESTS_BEHIND = [('hv1', 'web01')]               # at 192.168.122.10, not reachable but through a forward

OUR_TABLE = 'inet kvmnet_nat'
ACCEPT_COMMENT = 'comment "kvmnet.nat: accept"'
LIBVIRT_TABLES = ('ip libvirt_network', 'ip6 libvirt_network')


def tables(host):
    return host.check_output('nft list tables').splitlines()


def libvirt_table(host, table):
    """libvirt's table as `nft -a -s` lists it (handles, no counter values)."""
    return host.check_output(f'nft -a -s list table {table}')


def forward_rules(host, table):
    """The rules of libvirt's forward chain in TABLE, in order, handles dropped."""
    text = host.check_output(f'nft -s list chain {table} forward')
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith(('table', 'chain', 'type', '}'))]


def without_handles(text):
    return re.sub(r' # handle \d+', '', text)
