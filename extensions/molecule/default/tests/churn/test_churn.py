"""No moment without our rules: a client connects 20 times a second for 60 s to web01's forward on hv1
while another guest (app01) is destroyed and started five times and libvirtd is restarted once.

Every guest start makes libvirt run our network hook (port-created); with nothing moved, the hook's
kvmnet-nat-restore must change nothing at all (it logs "up to date" at debug priority), so not one
connection may be refused or time out.
"""
import json
import os
import subprocess
import time

from conftest import CLIENT, CLIENT_NS, HV, PROJECT

testinfra_hosts = ['hv1']
CONNLOOP = os.path.join(PROJECT, 'tests', 'lab', 'connloop.py')


def test_guest_churn_and_a_libvirtd_restart_cut_no_connection(host):
    host.run_test('kvmlab-wait-guests web01 app01')
    since = host.check_output('date "+%Y-%m-%d %H:%M:%S"')
    loop = subprocess.Popen(['ip', 'netns', 'exec', CLIENT_NS, 'python3', CONNLOOP, HV['hv1'], '8080', '20', '60',
                             '--expect', 'web01 %s' % CLIENT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(2)
        for cycle in range(5):
            host.run_test('virsh -q destroy app01')
            host.run_test('virsh -q start app01')
            if cycle == 2:
                host.run_test('systemctl restart libvirtd.service')
            time.sleep(4)
        out, err = loop.communicate(timeout=120)
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
    report = json.loads(out or '{}')
    assert report.get('tries', 0) >= 1150 and report['ok'] == report['tries'], (report, err)
    journal = host.check_output(f'journalctl -q -o cat -t kvmnet-nat-restore --since "{since}"').splitlines()
    assert len([line for line in journal if line == 'IPv4: up to date']) >= 5, journal    # the hook ran each start
    assert [line for line in journal if line != 'IPv4: up to date'] == [], journal        # and changed nothing
    host.run_test('kvmlab-wait-guests app01')
