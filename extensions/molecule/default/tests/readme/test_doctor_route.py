"""kvmnet.nat.doctor names a guest whose default gateway is not the hypervisor (hv2: libvirt's network
hands out 192.168.122.254 as router): app02 (masquerade never) cannot answer outside clients, web02
(masquerade always) still can. Mended, the doctor is green again."""
import base64

from conftest import BRIDGE, CLIENT, HV, probe, probe_until, run_doctor

testinfra_hosts = ['hv2']
OPTION = ("<dnsmasq:options xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>"
          "<dnsmasq:option value='dhcp-option=option:router,192.168.122.254'/></dnsmasq:options>")


def redefine(host, xml):
    """Define the network, restart it, re-attach web02's tap, restart app02 (it takes the new lease)."""
    encoded = base64.b64encode(xml.encode()).decode()
    host.run_test(f'echo {encoded} | base64 -d > /root/kvmlab-network.xml && virsh -q net-define /root/kvmlab-network.xml')
    host.run_test('virsh -q net-destroy default && virsh -q net-start default')
    for tap in host.check_output("virsh -q domiflist web02 | awk '{print $1}'").split():
        host.run_test(f'ip link set {tap} master virbr0 up')
    host.run_test('virsh -q destroy app02 && virsh -q start app02')
    host.run_test('kvmlab-wait-guests web02 app02')


def test_a_gateway_elsewhere(host, tmp_path):
    original = host.check_output('virsh net-dumpxml --inactive default')
    redefine(host, original.replace('</network>', OPTION + '</network>'))
    try:
        proc, rows = run_doctor(tmp_path, '-e', 'target=hv2')
        by_label = {row['label']: row for row in rows}
        app02 = by_label['app02 tcp/8443->443']
        assert proc.returncode != 0 and app02['failed'] == 'route', app02
        assert app02['cause'].startswith("app02's default gateway is 192.168.122.254 (libvirt network default "
                                         "hands it out), not this host (192.168.122.1)")
        assert app02['fix'].startswith('masquerade: always for app02')
        assert by_label['web02 tcp/8080->80']['verdict'] == 'ok'          # masquerade always: replies come back
        assert probe('tcp', HV['hv2'], 8443) != f'app02 {CLIENT}'
        assert probe_until(f'web02 {BRIDGE}', 'tcp', HV['hv2'], 8080) == f'web02 {BRIDGE}'
    finally:
        redefine(host, original)
    proc, rows = run_doctor(tmp_path, '-e', 'target=hv2')
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert probe_until(f'app02 {CLIENT}', 'tcp', HV['hv2'], 8443) == f'app02 {CLIENT}'
