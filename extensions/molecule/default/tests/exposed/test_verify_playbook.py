"""The kvmnet.nat.verify playbook, run from the lab's client, sees every declared port."""
import json

from conftest import run_verify_playbook


def test_verify_playbook_reports_every_declared_port(tmp_path):
    proc, report = run_verify_playbook(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    rows = {(r['hypervisor'], r['proto'], r['port']): (r['reachable'], r['answer']) for r in report}
    assert rows == {
        ('hv1', 'tcp', 8080): (True, 'web01 203.0.113.50'),
        ('hv1', 'tcp', 2222): (True, 'web01 203.0.113.50'),
        ('hv1', 'udp', 5353): (True, 'web01 203.0.113.50'),
        ('hv1', 'tcp', 10000): (True, 'web01 203.0.113.50'),
        ('hv1', 'tcp', 10009): (True, 'web01 203.0.113.50'),
        ('hv1', 'tcp', 8443): (True, 'app01 203.0.113.50'),
        ('hv2', 'tcp', 8080): (True, 'web02 192.168.122.1'),
        ('hv2', 'udp', 5353): (True, 'web02 192.168.122.1'),
        ('hv2', 'tcp', 8443): (True, 'app02 203.0.113.50'),
    }, json.dumps(report, indent=1)
