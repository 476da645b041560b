"""The README's dry run, as written (ansible-playbook -i INVENTORY kvmnet.nat.expose --check --diff), on the
converged lab: it reports nothing to change and changes nothing."""
from conftest import run_playbook

testinfra_hosts = ['hv1', 'hv2']


def test_check_diff_on_the_converged_lab_changes_nothing(host):
    before = host.check_output('iptables-save | grep -v "^#" | sed "s/\\[[0-9]*:[0-9]*\\]//"')
    proc, _rows = run_playbook('expose', None, '--check', '--diff', '--limit', host.backend.get_hostname())
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    recap = [line for line in proc.stdout.splitlines() if line.startswith(host.backend.get_hostname() + ' ')]
    assert recap and 'changed=0' in recap[-1] and 'failed=0' in recap[-1], recap
    after = host.check_output('iptables-save | grep -v "^#" | sed "s/\\[[0-9]*:[0-9]*\\]//"')
    assert after == before
