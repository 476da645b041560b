"""After side_effects/corrupt_saved_file.yml: each hypervisor's /etc/iptables/kvmnet-nat.v4 has one
appended comment (its checksum no longer matches) and a guest was stopped and started. libvirt started it
(the hook logged the refusal and exited 0), every forward still answers from the client, and
kvmnet.nat.doctor names the refused file (issue 19)."""
import pytest

from conftest import DECLARED, HV, probe_until, run_doctor

testinfra_hosts = ['hv1', 'hv2']
SAVED = '/etc/iptables/kvmnet-nat.v4'


@pytest.mark.parametrize('hv, proto, port, guest, seen', DECLARED)
def test_every_forward_still_answers_from_the_client(hv, proto, port, guest, seen):
    expected = f'{guest} {seen}'
    assert probe_until(expected, proto, HV[hv], port) == expected


def test_the_restarted_guests_run(host):
    name = host.backend.get_hostname()
    assert host.check_output(f'virsh -q domstate app0{name[-1]}').strip() == 'running'


def test_the_saved_file_is_still_the_spoilt_one(host):
    assert host.file(SAVED).content_string.endswith('# checked by the admin\n')


def test_the_doctor_names_the_refused_file(tmp_path):
    proc, rows = run_doctor(tmp_path)
    assert proc.returncode != 0, proc.stdout[-3000:]          # something is broken: the saved file
    assert rows, proc.stdout[-3000:] + proc.stderr[-2000:]
    for row in rows:
        saved = row['checks']['saved']
        assert (row['label'], saved['ok'], saved['detail']) == (row['label'], False, f'{SAVED}: checksum does not match')
        assert 'kvmnet-nat-restore refuses it' in row['cause'], row
    # the playbook's failure (on stderr, as for every failed task) names the file and why it is refused
    assert f'{SAVED} was edited, cut short or damaged (its checksum does not match)' in proc.stderr, proc.stderr[-3000:]
