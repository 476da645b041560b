"""On the hypervisor: the role chose its nftables backend (libvirt's nftables tables are loaded), our one
accept rule is first in libvirt's forward chains and there once, nothing in iptables, the boot pieces are
ordered with nftables.service; and the two paths that do not come from the client: hairpin (a machine on
libvirt's network to the public address) and host-local (the hypervisor to its own public address)."""
import time

import pytest

from conftest import ACCEPT_COMMENT, BRIDGE, LIBVIRT_TABLES, OUR_TABLE, forward_rules, tables

testinfra_hosts = ['hv1']
HAIRPIN_NS = 'kvmlab-hairpin'


def test_auto_chose_nftables(host):
    assert f'table {OUR_TABLE}' in tables(host)
    assert 'KVMNAT' not in host.check_output('iptables-save') + host.check_output('ip6tables-save')


@pytest.mark.parametrize('table', LIBVIRT_TABLES)
def test_our_accept_rule_is_first_and_once(host, table):
    # after a libvirtd restart, libvirt builds its tables after its hooks ran; the hook's later run puts the
    # rule back as soon as they are there: allow it a few seconds
    for _try in range(30):
        rules = forward_rules(host, table)
        if rules and ACCEPT_COMMENT in rules[0]:
            break
        time.sleep(0.5)
    assert rules[0].startswith('ct mark & 0x') and rules[0].endswith(f'accept {ACCEPT_COMMENT}'), rules
    assert sum(ACCEPT_COMMENT in rule for rule in rules) == 1, rules
    libvirts = ['counter jump guest_cross', 'counter jump guest_input', 'counter jump guest_output']
    assert [r for r in rules if ACCEPT_COMMENT not in r] == libvirts, rules


def test_admins_nftables_service_untouched(host):
    assert host.service('nftables').is_enabled
    conf = host.file('/etc/nftables.conf').content_string
    assert conf.startswith('#!/usr/sbin/nft -f\n\nflush ruleset\n') and 'kvmnet' not in conf
    assert 'table inet filter' in tables(host)


def test_boot_unit_follows_nftables_service(host):
    unit = host.service('kvmnet-nat')
    assert unit.is_enabled
    props = dict(line.split('=', 1) for line in host.check_output(
        'systemctl show kvmnet-nat.service -p After -p PartOf').splitlines())
    assert 'nftables.service' in props['After'].split(), props
    assert 'nftables.service' in props['PartOf'].split(), props
    assert host.file('/etc/libvirt/hooks/network.d/50-kvmnet-nat').mode == 0o755


def test_forwarding_enabled(host):
    assert host.file('/proc/sys/net/ipv4/ip_forward').content_string.strip() == '1'
    assert host.file('/proc/sys/net/ipv6/conf/all/forwarding').content_string.strip() == '1'


def connect(host, address, port, netns=None):
    """One TCP connection from the hypervisor (or a namespace of its own); the answer line."""
    code = ('import socket,sys\n'
            'try:\n'
            '    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n'
            '    print(s.recv(200).decode().strip())\n'
            'except OSError as e:\n'
            '    print("ERROR", e)\n')
    prefix = f'ip netns exec {netns} ' if netns else ''
    return host.check_output(f"{prefix}python3 -c '{code}' {address} {port}")


def connect_until(host, address, port, expected, netns=None, seconds=20):
    """connect() once a second until the answer starts with ``expected`` or ``seconds`` have passed (a guest may
    still be settling after a side effect, e.g. taking its IPv6 address after a reboot); the last answer."""
    deadline = time.monotonic() + seconds
    while True:
        answer = connect(host, address, port, netns=netns)
        if answer.startswith(expected) or time.monotonic() > deadline:
            return answer
        time.sleep(1)


@pytest.mark.parametrize('address, port, guest', [('203.0.113.11', 8080, 'web01'), ('2001:db8:113::11', 8443, 'app01')])
def test_host_local(host, address, port, guest):
    """The hypervisor itself reaches a forward on its own public address (nat output)."""
    assert connect_until(host, address, port, f'{guest} ').startswith(f'{guest} ')


@pytest.fixture()
def hairpin_ns(host):
    """A machine on libvirt's network: a namespace on the hypervisor with a veth in virbr0, 192.168.122.250."""
    host.run_expect([0], f'ip netns add {HAIRPIN_NS}')
    try:
        host.run_expect([0], 'ip link add kvmhp0 type veth peer name eth0 netns ' + HAIRPIN_NS)
        host.run_expect([0], 'ip link set kvmhp0 master virbr0 up')
        for cmd in ('ip link set lo up', 'ip link set eth0 up', 'ip addr add 192.168.122.250/24 dev eth0',
                    'ip route add default via 192.168.122.1'):
            host.run_expect([0], f'ip netns exec {HAIRPIN_NS} {cmd}')
        yield HAIRPIN_NS
    finally:
        host.run(f'ip link del kvmhp0; ip netns del {HAIRPIN_NS}')


@pytest.mark.parametrize('port, seen', [(8080, BRIDGE), (8081, BRIDGE)])
def test_hairpin(host, hairpin_ns, port, seen):
    """From libvirt's network to the public address: the forward answers, masqueraded to the bridge."""
    assert connect_until(host, '203.0.113.11', port, 'web01', netns=hairpin_ns) == f'web01 {seen}'
