"""From the client: each declared port answers with the right guest, and nothing else opened."""
import pytest

from conftest import CLIENT, CLIENT2, DECLARED, HV, UNDECLARED, client, probe, probe_until


@pytest.mark.parametrize('hv,proto,port,guest,seen', DECLARED, ids=[f'{d[0]}-{d[1]}-{d[2]}' for d in DECLARED])
def test_declared_port_answers_with_its_guest(hv, proto, port, guest, seen):
    assert probe_until(f'{guest} {seen}', proto, HV[hv], port) == f'{guest} {seen}'


@pytest.mark.parametrize('hv,proto,port', UNDECLARED, ids=[f'{u[0]}-{u[1]}-{u[2]}' for u in UNDECLARED])
def test_undeclared_port_is_not_forwarded(hv, proto, port):
    answer = probe(proto, HV[hv], port)
    assert answer in ('REFUSED', 'TIMEOUT'), answer


def test_allow_list_refuses_other_sources():
    assert probe_until(f'web01 {CLIENT}', 'tcp', HV['hv1'], 2222) == f'web01 {CLIENT}'
    assert probe('tcp', HV['hv1'], 2222, source=CLIENT2) in ('REFUSED', 'TIMEOUT')


@pytest.mark.parametrize('hv', sorted(HV))
def test_host_service_on_80_still_answers(hv):
    assert probe('tcp', HV[hv], 80) == f'host {hv} {CLIENT}'


@pytest.mark.parametrize('hv,guest', [('hv1', 'web01'), ('hv2', 'web02')])
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
