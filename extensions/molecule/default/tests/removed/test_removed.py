"""After app01 left the inventory: its forward is gone, every other one still works."""
import pytest

from conftest import DECLARED, HV, probe, probe_until, saved_rules

testinfra_hosts = ['hv1']
KEPT = [d for d in DECLARED if d[3] != 'app01']


def test_removed_guest_port_is_closed():
    assert probe('tcp', HV['hv1'], 8443) in ('REFUSED', 'TIMEOUT')


@pytest.mark.parametrize('hv,proto,port,guest,seen', KEPT, ids=[f'{d[0]}-{d[1]}-{d[2]}' for d in KEPT])
def test_other_forwards_untouched(hv, proto, port, guest, seen):
    assert probe_until(f'{guest} {seen}', proto, HV[hv], port) == f'{guest} {seen}'


def test_exactly_app01s_pin_is_gone(host):
    xml = host.check_output('virsh -q net-dumpxml default')
    assert host.file('/var/lib/kvmnet-nat/pins.json').exists is False      # app01's was the only pin of ours
    assert xml.count('<host ') == 1 and "ip='192.168.122.10'" in xml, xml  # the lab's web01 reservation stays


def test_no_rule_mentions_app01(host):
    text = '\n'.join('\n'.join(rules) for rules in saved_rules(host).values())
    assert 'kvmnet.nat: app01' not in text
    assert 'kvmnet.nat: web01' in text
