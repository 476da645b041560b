"""expose_state=absent on the nftables backend: our table, our one accept rule per libvirt forward chain and
every installed file are gone, and libvirt's tables are exactly as libvirt wrote them (the same rules with
the same handles, nothing but our rule missing); nftables.service and the admin's table are untouched."""
import pytest

from conftest import ACCEPT_COMMENT, DECLARED, HV, LIBVIRT_TABLES, OUR_TABLE, libvirt_table, probe, run_playbook, tables

testinfra_hosts = ['hv1']


@pytest.fixture(scope='module')
def removed(host):
    before = {table: libvirt_table(host, table) for table in LIBVIRT_TABLES}
    proc, _rows = run_playbook('expose', None, '-e', 'expose_state=absent')
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert 'failed=0' in proc.stdout
    return before


@pytest.mark.parametrize('table', LIBVIRT_TABLES)
def test_libvirts_tables_exactly_as_libvirt_wrote_them(host, removed, table):
    before = removed[table].splitlines()
    ours = [line for line in before if ACCEPT_COMMENT in line]
    assert len(ours) == 1, before
    assert libvirt_table(host, table).splitlines() == [line for line in before if ACCEPT_COMMENT not in line]


def test_no_table_of_ours(host, removed):
    loaded = tables(host)
    assert f'table {OUR_TABLE}' not in loaded and 'table inet filter' in loaded, loaded
    assert 'KVMNAT' not in host.check_output('iptables-save') + host.check_output('ip6tables-save')
    assert 'kvmnet' not in host.check_output('nft list ruleset')


@pytest.mark.parametrize('path', [
    '/usr/local/sbin/kvmnet-nat-restore', '/etc/libvirt/hooks/network.d/50-kvmnet-nat',
    '/etc/sysctl.d/60-kvmnet-nat.conf', '/etc/systemd/system/kvmnet-nat.service', '/var/lib/kvmnet-nat/pins.json',
    '/usr/local/lib/kvmnet-nat',
])
def test_installed_files_removed(host, removed, path):
    assert not host.file(path).exists


def test_no_saved_ruleset_of_ours(host, removed):
    assert host.run('ls /etc/iptables/kvmnet-nat.* /etc/nftables/kvmnet-nat* 2>/dev/null').stdout.strip() == ''


def test_nftables_service_untouched(host, removed):
    assert host.service('nftables').is_enabled
    assert host.file('/etc/nftables.conf').content_string.startswith('#!/usr/sbin/nft -f\n\nflush ruleset\n')


@pytest.mark.parametrize('hv,proto,port,guest,seen', DECLARED, ids=[f'{d[0]}-{d[1]}-{d[2]}' for d in DECLARED])
def test_nothing_forwarded_any_more(removed, hv, proto, port, guest, seen):
    assert not probe(proto, HV[hv], port).startswith(guest)


def test_host_service_still_answers(removed):
    assert probe('tcp', HV['hv1'], 80).startswith('host hv1 ')
