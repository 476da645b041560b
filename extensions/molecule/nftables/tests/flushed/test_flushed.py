"""After `systemctl restart nftables` with Debian's stock /etc/nftables.conf (`flush ruleset`): libvirt's
tables are gone until libvirt rebuilds them, ours is back (kvmnet-nat.service is PartOf nftables.service),
and every declared forward answers from the client as before."""
import pytest

from conftest import DECLARED, HV, LIBVIRT_TABLES, OUR_TABLE, probe_until, tables

testinfra_hosts = ['hv1']


def test_ours_is_back_libvirts_are_flushed(host):
    loaded = tables(host)
    assert f'table {OUR_TABLE}' in loaded and 'table inet filter' in loaded, loaded
    assert not [t for t in LIBVIRT_TABLES if f'table {t}' in loaded], loaded


@pytest.mark.parametrize('hv,proto,port,guest,seen', DECLARED, ids=[f'{d[0]}-{d[1]}-{d[2]}' for d in DECLARED])
def test_declared_port_still_answers(hv, proto, port, guest, seen):
    assert probe_until(f'{guest} {seen}', proto, HV[hv], port) == f'{guest} {seen}'
