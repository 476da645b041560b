"""kvmnet.nat.doctor names a stopped guest and an address changed behind the rules' back (hv1, app01),
while the client outside indeed gets no answer; mended, the doctor is green again."""
import re

from conftest import CLIENT, HV, probe, run_doctor

testinfra_hosts = ['hv1']
APP01 = ('tcp', HV['hv1'], 8443)
ANSWER = f'app01 {CLIENT}'


def only_app01(tmp_path):
    proc, rows = run_doctor(tmp_path, '-e', 'doctor_guest=app01')
    assert [row['label'] for row in rows] == ['app01 tcp/8443->443'], proc.stdout[-3000:]
    return proc, rows[0]


def restart(host, name):
    host.run_test(f'virsh -q destroy {name}')
    host.run_test(f'virsh -q start {name}')
    host.run_test(f'kvmlab-wait-guests {name}')


def test_a_stopped_guest(host, tmp_path):
    host.run_test('virsh -q destroy app01')
    try:
        proc, row = only_app01(tmp_path)
        # the play's failure names it (ansible prints a failed task on stderr)
        assert proc.returncode != 0 and 'hv1: broken: app01 tcp/8443->443 (guest: app01 is shut off.)' in proc.stderr
        assert (row['failed'], row['cause'], row['fix']) == ('guest', 'app01 is shut off.', 'virsh start app01.')
        assert probe(*APP01) != ANSWER
    finally:
        host.run_test('virsh -q start app01')
        host.run_test('kvmlab-wait-guests app01')
    proc, row = only_app01(tmp_path)
    assert proc.returncode == 0 and row['verdict'] == 'ok', row


def test_an_address_changed_behind_the_rules_back(host, tmp_path):
    mac = host.check_output("virsh -q domiflist app01 | awk '{print $5}'").strip()
    network = host.check_output('virsh net-dumpxml --inactive default')
    pin = re.search(r"<host mac='%s'[^>]*/>" % re.escape(mac), network).group(0)
    old = re.search(r"ip='([0-9.]+)'", pin).group(1)
    moved = re.sub(r"ip='[0-9.]+'", "ip='192.168.122.77'", pin)
    host.run_test(f'virsh -q net-update default modify ip-dhcp-host "{moved}" --live --config')
    try:
        restart(host, 'app01')
        proc, row = only_app01(tmp_path)
        assert proc.returncode != 0 and row['failed'] == 'guest', row
        assert f"app01's address is now 192.168.122.77 (lease), but the rules send tcp/8443 to {old}." == row['cause']
        assert probe(*APP01) != ANSWER
    finally:
        host.run_test(f'virsh -q net-update default modify ip-dhcp-host "{pin}" --live --config')
        restart(host, 'app01')
    proc, row = only_app01(tmp_path)
    assert proc.returncode == 0 and row['verdict'] == 'ok', row
    assert probe(*APP01) == ANSWER
