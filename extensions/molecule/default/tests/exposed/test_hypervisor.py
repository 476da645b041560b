"""On each hypervisor: our jumps first, nothing doubled, the admin's file untouched, persisted."""
import json

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


def test_the_hosts_own_firewall_rules_are_live(host):
    filter_rules = saved_rules(host)['filter']
    if host.backend.get_hostname() == 'hv1':      # ufw's rules, loaded by ufw itself (also after a reboot)
        assert '-A ufw-user-input -p tcp -m tcp --dport 22 -j ACCEPT' in filter_rules
    else:                                         # the admin's rules.v4, loaded by netfilter-persistent
        assert '-A INPUT -p tcp -m tcp --dport 22 -m comment --comment "admin: ssh" -j ACCEPT' in filter_rules


def test_ufw_is_still_installed_and_active_with_its_rules(host):
    if host.backend.get_hostname() != 'hv1':
        assert not host.package('ufw').is_installed
        return
    assert host.package('ufw').is_installed
    status = host.check_output('ufw status')
    assert 'Status: active' in status and '22/tcp' in status and '80/tcp' in status, status
    assert not host.package('iptables-persistent').is_installed     # it would have removed ufw


def test_persisted_copy_holds_only_our_chains(host):
    text = host.file('/etc/iptables/kvmnet-nat.v4').content_string
    rules = [line for line in text.splitlines() if line.startswith(('-A', '-I'))]
    assert rules and all('KVMNAT_' in line for line in rules), rules


def test_forwarding_enabled_and_persisted(host):
    assert host.file('/proc/sys/net/ipv4/ip_forward').content_string.strip() == '1'
    assert 'net.ipv4.ip_forward = 1' in host.file('/etc/sysctl.d/60-kvmnet-nat.conf').content_string


def test_boot_pieces_installed(host):
    plugin = host.file('/usr/share/netfilter-persistent/plugins.d/45-kvmnet-nat')
    unit = host.file('/etc/systemd/system/kvmnet-nat.service')
    if host.backend.get_hostname() == 'hv1':      # ufw: our own unit, no netfilter-persistent
        assert host.service('kvmnet-nat').is_enabled and unit.exists and not plugin.exists
    else:
        assert host.service('netfilter-persistent').is_enabled and plugin.mode == 0o755 and not unit.exists
    assert host.file('/etc/libvirt/hooks/network.d/50-kvmnet-nat').mode == 0o755


def test_exposed_guests_are_pinned_and_only_the_roles_pins_recorded(host):
    """Looked-up guests (app01, web02, app02) keep their address: a reservation for each. The lab's own
    reservations (webNN's) were right already and are not taken over."""
    xml = host.check_output('virsh -q net-dumpxml default')
    record = json.loads(host.file('/var/lib/kvmnet-nat/pins.json').content_string)['pins']
    ours = {'hv1': ['app01'], 'hv2': ['app02']}[host.backend.get_hostname()]
    assert sorted(p['guest'] for p in record) == ours
    for pin in record:
        # "vnet0  ipv4  52:54:00:..  192.168.122.97/24"
        mac, _family, ip = host.check_output(f"virsh -q domifaddr {pin['guest']} --source lease").split()[1:4]
        assert (pin['mac'], pin['ip']) == (mac, ip.split('/')[0])
        entries = [line for line in xml.splitlines() if '<host ' in line and f"mac='{mac}'" in line]
        assert len(entries) == 1 and f"ip='{pin['ip']}'" in entries[0], xml
    assert xml.count('<host ') == 2, xml            # the lab's reservation and ours
