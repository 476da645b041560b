"""The reachability tests every scenario runs from the lab's client, on what its tests/conftest.py
declares: HV (name -> public address), DECLARED (name, proto, public port, guest that must answer, address
the guest must see), UNDECLARED (name, proto, port), ALLOW_LISTED (name, port, guest: declared with
``sources: [CLIENT/32]``), HOST_SERVICE (names whose host answers on :80 itself), GUESTS_BEHIND (name,
guest at 192.168.122.10). A scenario's test module imports the tests it runs from here."""
import json

import pytest

from conftest import ALLOW_LISTED, DECLARED, GUESTS_BEHIND, HOST_SERVICE, HV, UNDECLARED
from lab_client import CLIENT, CLIENT2, client, probe, probe_until, run_verify_playbook


@pytest.mark.parametrize('hv,proto,port,guest,seen', DECLARED, ids=[f'{d[0]}-{d[1]}-{d[2]}' for d in DECLARED])
def test_declared_port_answers_with_its_guest(hv, proto, port, guest, seen):
    assert probe_until(f'{guest} {seen}', proto, HV[hv], port) == f'{guest} {seen}'


@pytest.mark.parametrize('hv,proto,port', UNDECLARED, ids=[f'{u[0]}-{u[1]}-{u[2]}' for u in UNDECLARED])
def test_undeclared_port_is_not_forwarded(hv, proto, port):
    answer = probe(proto, HV[hv], port)
    assert answer in ('REFUSED', 'TIMEOUT'), answer


@pytest.mark.parametrize('hv,port,guest', ALLOW_LISTED)
def test_allow_list_refuses_other_sources(hv, port, guest):
    assert probe_until(f'{guest} {CLIENT}', 'tcp', HV[hv], port) == f'{guest} {CLIENT}'
    assert probe('tcp', HV[hv], port, source=CLIENT2) in ('REFUSED', 'TIMEOUT')


@pytest.mark.parametrize('hv', HOST_SERVICE)
def test_host_service_on_80_still_answers(hv):
    assert probe('tcp', HV[hv], 80) == f'host {hv} {CLIENT}'


@pytest.mark.parametrize('hv,guest', GUESTS_BEHIND)
def test_guest_network_is_not_reachable_directly(hv, guest):
    # A client that routes the guest network through the hypervisor must still not reach the guests.
    client('ip', 'route', 'replace', '192.168.122.0/24', 'via', HV[hv])
    try:
        for port in (80, 22, 8000):
            answer = probe('tcp', '192.168.122.10', port)
            assert not answer.startswith(guest), (port, answer)
            assert answer in ('REFUSED', 'TIMEOUT', 'ERROR No route to host'), (port, answer)
    finally:
        client('ip', 'route', 'del', '192.168.122.0/24')


def test_verify_playbook_reports_every_declared_port(tmp_path):
    """The kvmnet.nat.verify playbook, run from the lab's client, sees every declared port."""
    proc, report = run_verify_playbook(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    rows = {(r['public_ip'], r['proto'], r['port']): (r['reachable'], r['answer']) for r in report}
    assert rows == {(HV[hv], proto, port): (True, f'{guest} {seen}') for hv, proto, port, guest, seen in DECLARED}, \
        json.dumps(report, indent=1)
