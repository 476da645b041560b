"""kvmnet.nat.doctor on the healthy lab: every declared forward of both hypervisors is green, also
with the probe (one connection from each hypervisor to each TCP forward's public address)."""
from conftest import DECLARED, run_doctor

LABELS = sorted(['web01 tcp/8080->80', 'web01 tcp/2222->22', 'web01 udp/5353->53', 'web01 tcp/10000-10009->20000-20009',
                 'app01 tcp/8443->443', 'web02 tcp/8080->80', 'web02 udp/5353->53', 'app02 tcp/8443->443'])


def test_every_forward_is_green(tmp_path):
    proc, rows = run_doctor(tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert sorted(row['label'] for row in rows) == LABELS
    assert len({(hv, proto, port) for hv, proto, port, _g, _s in DECLARED if port != 10009}) == len(LABELS)
    for row in rows:
        assert row['verdict'] == 'ok', row
        checks = row['checks']
        assert checks['jumps']['ok'] and checks['rules']['ok'] and checks['saved']['ok'], row
        assert checks['guest']['ok'] and 'running at' in checks['guest']['detail'], row
    route = {row['label']: row['checks']['route'] for row in rows}
    assert 'gateway 192.168.122.1 (this host' in route['web01 tcp/8080->80']['detail']
    assert 'masquerade: always' in route['web02 tcp/8080->80']['detail']
    assert 'forward' in proc.stdout and 'all ok' in proc.stdout


# sources: [203.0.113.50/32], the client only (inventory/host_vars/hv1.yml): the hypervisor's own connection is
# rightly not forwarded
ALLOW_LISTED = 'web01 tcp/2222->22'


def test_the_probe_sees_each_tcp_forward_dnat_its_connection(tmp_path):
    proc, rows = run_doctor(tmp_path, '-e', 'doctor_probe=true')
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert sorted(row['label'] for row in rows) == LABELS
    for row in rows:
        counters = row['checks']['counters']
        if row['label'] == ALLOW_LISTED:
            assert counters['ok'] is None and 'is not in its sources' in counters['detail'], row
        elif row['proto'] == 'tcp':
            assert counters['ok'] is True and 'was DNATed (+' in counters['detail'], row
        else:
            assert counters['ok'] is None, row


def test_the_readmes_selection(tmp_path):
    proc, rows = run_doctor(tmp_path, '-e', 'doctor_guest=web01', '-e', 'doctor_port=8080')
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert [row['label'] for row in rows] == ['web01 tcp/8080->80']     # hv2 declares no web01: nothing there
