"""After check mode and every refusal: nothing of kvmnet.nat on the hypervisor, and firewalld left running."""
testinfra_hosts = ['hv1']


def test_no_rule_or_chain_of_ours(host):
    assert 'KVMNAT' not in host.check_output('iptables-save')


def test_iptables_persistent_not_installed_by_check_mode(host):
    assert not host.package('iptables-persistent').is_installed


def test_admin_rules_file_untouched(host):
    assert '-A INPUT -p tcp -m tcp --dport 22 -m comment --comment "admin: ssh" -j ACCEPT' in \
        host.file('/etc/iptables/rules.v4').content_string


def test_firewalld_is_left_running(host):
    assert host.service('firewalld').is_running


def test_no_pin_was_made(host):
    assert not host.file('/var/lib/kvmnet-nat/pins.json').exists
    assert host.check_output('virsh -q net-dumpxml default').count('<host ') == 1
