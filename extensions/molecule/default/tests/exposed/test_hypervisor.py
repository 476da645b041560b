"""On each hypervisor: our jumps first, nothing doubled, the admin's file untouched, persisted."""
import pytest

from conftest import saved_rules

testinfra_hosts = ['hv1', 'hv2']


@pytest.mark.parametrize('table,chain,ours', [
    ('filter', 'FORWARD', 'KVMNAT_FWD'), ('nat', 'PREROUTING', 'KVMNAT_DNAT'),
    ('nat', 'OUTPUT', 'KVMNAT_DNAT'), ('nat', 'POSTROUTING', 'KVMNAT_SNAT'),
])
def test_our_jump_is_first(host, table, chain, ours):
    rules = [r for r in saved_rules(host)[table] if r.startswith(f'-A {chain} ')]
    assert rules[0].endswith(f'-j {ours}'), rules
    assert sum(r.endswith(f'-j {ours}') for r in rules) == 1, rules


def test_libvirt_rules_still_there(host):
    rules = saved_rules(host)['filter']
    assert '-A LIBVIRT_FWI -o virbr0 -j REJECT --reject-with icmp-port-unreachable' in rules


def test_no_rule_is_doubled(host):
    for table, rules in saved_rules(host).items():
        doubled = sorted({r for r in rules if rules.count(r) > 1})
        assert doubled == [], (table, doubled)


def test_admin_rules_file_is_byte_identical(host, admin_rules):
    assert host.file('/etc/iptables/rules.v4').content_string == admin_rules


def test_admin_rule_is_live(host):
    assert '-A INPUT -p tcp -m tcp --dport 22 -m comment --comment "admin: ssh" -j ACCEPT' in saved_rules(host)['filter']


def test_persisted_copy_holds_only_our_chains(host):
    text = host.file('/etc/iptables/kvmnet-nat.v4').content_string
    rules = [line for line in text.splitlines() if line.startswith(('-A', '-I'))]
    assert rules and all('KVMNAT_' in line for line in rules), rules


def test_forwarding_enabled_and_persisted(host):
    assert host.file('/proc/sys/net/ipv4/ip_forward').content_string.strip() == '1'
    assert 'net.ipv4.ip_forward = 1' in host.file('/etc/sysctl.d/60-kvmnet-nat.conf').content_string


def test_boot_pieces_installed(host):
    assert host.service('netfilter-persistent').is_enabled
    assert host.file('/usr/share/netfilter-persistent/plugins.d/45-kvmnet-nat').mode == 0o755
    assert host.file('/etc/libvirt/hooks/network.d/50-kvmnet-nat').mode == 0o755


def test_looked_up_addresses_are_pinned_where_asked(host):
    xml = host.check_output('virsh -q net-dumpxml default')
    if host.backend.get_hostname() == 'hv2':      # expose_pin_addresses: true
        for guest in ('web02', 'app02'):
            # "vnet0  ipv4  52:54:00:..  192.168.122.97/24"
            mac, _family, ip = host.check_output(f'virsh -q domifaddr {guest} --source lease').split()[1:4]
            entries = [line for line in xml.splitlines() if '<host ' in line and f"mac='{mac}'" in line]
            assert len(entries) == 1 and f"ip='{ip.split('/')[0]}'" in entries[0], (guest, xml)
        # web02 already had the lab's reservation; app02's came from the role
        assert xml.count('<host ') == 2, xml
    else:                                         # only the lab's own reservation for web01
        assert xml.count('<host ') == 1, xml
