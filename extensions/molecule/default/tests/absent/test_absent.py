"""The README's removal, run as written (ansible-playbook -i INVENTORY kvmnet.nat.expose -e expose_state=absent):
nothing of ours is left, everything else is as it was."""
import pytest

from conftest import DECLARED, HV, probe, run_playbook, run_verify_playbook, saved_rules

testinfra_hosts = ['hv1', 'hv2']


@pytest.fixture(scope='module', autouse=True)
def removed():
    proc, _rows = run_playbook('expose', None, '-e', 'expose_state=absent')
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert 'failed=0' in proc.stdout


def test_no_chain_or_rule_of_ours(host):
    assert 'KVMNAT' not in host.check_output('iptables-save')
    assert 'KVMNAT' not in host.check_output('ip6tables-save')


@pytest.mark.parametrize('path', [
    '/etc/iptables/kvmnet-nat.v4', '/etc/iptables/kvmnet-nat.v6', '/usr/local/sbin/kvmnet-nat-restore',
    '/usr/share/netfilter-persistent/plugins.d/45-kvmnet-nat', '/etc/libvirt/hooks/network.d/50-kvmnet-nat',
    '/etc/sysctl.d/60-kvmnet-nat.conf', '/etc/systemd/system/kvmnet-nat.service', '/var/lib/kvmnet-nat/pins.json',
    '/usr/local/lib/kvmnet-nat',      # the restore's library, its directories pruned
])
def test_installed_files_removed(host, path):
    assert not host.file(path).exists


def test_libvirt_and_admin_rules_kept(host, admin_rules):
    rules = saved_rules(host)['filter']
    assert '-A LIBVIRT_FWI -o virbr0 -j REJECT --reject-with icmp-port-unreachable' in rules
    if host.backend.get_hostname() == 'hv1':
        assert '-A ufw-user-input -p tcp -m tcp --dport 22 -j ACCEPT' in rules
        assert 'Status: active' in host.check_output('ufw status')
    else:
        assert '-A INPUT -p tcp -m tcp --dport 22 -m comment --comment "admin: ssh" -j ACCEPT' in rules
    assert host.file('/etc/iptables/rules.v4').content_string == admin_rules


def test_only_the_roles_pins_are_removed(host):
    xml = host.check_output('virsh -q net-dumpxml default')
    assert xml.count('<host ') == 1, xml           # the lab's own webNN reservation


@pytest.mark.parametrize('hv,proto,port,guest,seen', DECLARED, ids=[f'{d[0]}-{d[1]}-{d[2]}' for d in DECLARED])
def test_nothing_forwarded_any_more(hv, proto, port, guest, seen):
    assert not probe(proto, HV[hv], port).startswith(guest)


@pytest.mark.parametrize('hv', sorted(HV))
def test_host_service_still_answers(hv):
    assert probe('tcp', HV[hv], 80).startswith(f'host {hv} ')


def test_verify_playbook_fails_when_nothing_is_exposed(tmp_path):
    proc, report = run_verify_playbook(tmp_path, '-e', 'verify_retry_for=1')
    assert proc.returncode != 0
    output = ' '.join((proc.stdout + proc.stderr).split())   # whatever callback and line folding
    assert 'not reachable from localhost: hv1 web01 tcp 203.0.113.11:8080;' in output, output[-3000:]
    assert len(report) == 9, report
    # a silent UDP port without "expect" cannot be judged (reachable: null); nothing may answer
    assert [row for row in report if row['reachable'] is True] == []
    assert [row for row in report if row['proto'] == 'tcp' and row['reachable'] is not False] == []
