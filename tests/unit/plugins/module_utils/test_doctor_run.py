# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_doctor_run.py, the doctor's run without root: its parameters, its forwards and their missing addresses,
the saved files; and the seam: the doctor gets everything of iptables from the backend it is handed.
(The whole run, commands and all, is in tests/unit/plugins/modules/test_doctor.py.)"""

from __future__ import annotations

import ast
import os

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _doctor as D
from ansible_collections.kvmnet.nat.plugins.module_utils import _doctor_run as RUN
from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes

MODULE_UTILS = os.path.join(os.path.dirname(D.__file__))
PARAMS = {'public_ip': '203.0.113.10', 'public_ip6': None, 'in_interface': None, 'chain_prefix': 'KVMNAT',
          'persist_path': None, 'uri': 'qemu:///system', 'guest': None, 'port': None, 'probe': False, 'timeout': 2.0}


class Backend:
    """The two things the run asks a backend before the walk: its own parameters' problems, our DNATs."""

    def __init__(self, problems=(), destinations=None):
        self._problems, self.destinations, self.read_with = list(problems), destinations or {}, []

    def problems(self):
        return self._problems

    def dnat_destinations(self, live):
        self.read_with.append(live)
        return self.destinations

    @staticmethod
    def saved_path(path, family):
        return '%s.v%d' % (path, family)


@pytest.mark.parametrize('name', ['_doctor.py', '_doctor_run.py', '_diagnose_host.py'])
def test_the_doctor_imports_nothing_of_iptables(name):
    with open(os.path.join(MODULE_UTILS, name)) as handle:
        tree = ast.parse(handle.read())
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)] + \
        [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert imported and not [name for name in imported if 'iptables' in name], imported


@pytest.mark.parametrize('raw, label, parsed', [
    ({'guest': 'web01', 'host_port': 8080, 'guest_port': 80}, 'web01 tcp/8080->80', 'web01 tcp/8080->80'),
    ({'guest': 'dns', 'host_port': ' 5353 ', 'proto': 'udp'}, 'dns udp/5353->5353', 'dns udp/5353->5353'),
    ({'guest': 'web01', 'host_port': '8000-8009', 'guest_port': ''}, 'web01 tcp/8000-8009->8000-8009',
     'web01 tcp/8000-8009->8000-8009'),
    ({'guest': 'web01', 'host_port': 'x'}, None, None),
])
def test_a_forward_is_labelled_as_the_engine_names_it(raw, label, parsed):
    assert RUN._label(raw) == label
    if parsed is not None:
        assert RUN._parsed_label(raw) == parsed


def test_fields_without_an_address_leave_only_the_address_out():
    fields, problems = RUN._fields({'guest': 'web01', 'host_port': 80, 'guest_ip': None})
    assert problems == [] and fields['guest'] == 'web01'
    assert RUN._fields({'guest': 'web01', 'host_port': 80, 'guest_ip': 'x'})[1] != []
    assert [p[:9] for p in RUN._fields({'guest': 'web01', 'host_port': 80, 'proto': 'tcp;x'})[1]] == ['unknown p']


@pytest.mark.parametrize('guest, port, selected', [
    (None, None, True), ('web01', None, True), ('db01', None, False),
    (None, 8000, True), (None, 8009, True), (None, 8010, False), ('web01', 8005, True), ('db01', 8005, False),
])
def test_guest_and_port_select_forwards(guest, port, selected):
    fwd = F.parse_forwards([{'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': '8000-8009'}],
                           public_ip='203.0.113.10')[0]
    module = fakes.FakeModule(dict(PARAMS, guest=guest, port=port))
    assert RUN._selected(module, fwd) is selected


def test_the_backends_problems_come_first_with_every_other_problem():
    module = fakes.FakeModule(dict(PARAMS, timeout=0, forwards=[{'guest': 'web01', 'host_port': 80, 'send': 'x'}]))
    result = fakes.result_of(lambda m: RUN._check_params(m, Backend(['chain_prefix is wrong'])), module)
    assert result['failed'] and result['errors'][0] == 'chain_prefix is wrong'
    assert result['errors'][1:] == ['timeout 0 must be between 0.1 and 10 seconds',
                                    'forwards[0]: send is for UDP forwards (a TCP forward is checked by connecting)']
    assert result['msg'] == 'invalid parameters: %s' % '; '.join(result['errors'])
    fine = fakes.FakeModule(dict(PARAMS, forwards=[{'guest': 'web01', 'host_port': 80}]))
    assert RUN._check_params(fine, Backend()) is None


def test_the_saved_files_are_read_per_family(tmp_path):
    (tmp_path / 'rules.v4').write_text('*nat\nCOMMIT\n')
    os.mkdir(str(tmp_path / 'rules.v6'))                  # a directory: unreadable as a file
    view = D.View(backend=Backend(), families={4: D.Family(4), 6: D.Family(6)})
    RUN._read_saved(view, str(tmp_path / 'rules'))
    assert (view.families[4].saved_path, view.families[4].saved_text) == (str(tmp_path / 'rules.v4'), '*nat\nCOMMIT\n')
    assert view.families[6].saved_text.startswith('# unreadable: ')
    RUN._read_saved(view, str(tmp_path / 'other'))
    assert view.families[4].saved_text is None and view.families[6].saved_path == str(tmp_path / 'other.v6')


def test_a_missing_address_is_our_dnats_then_libvirts_else_unresolved():
    backend = Backend(destinations={'web01 tcp/8080->80': '192.168.122.10'})
    view = D.View(backend=backend, families={4: D.Family(4, 'nft', {'nat': 'live4'}), 6: D.Family(6, 'nft', {})})
    view.libvirt = {'domains': {'db01': {'ipv4': [], 'ipv6': ['fd00::5']}, 'app': {'ipv4': ['192.168.122.20']}}}
    raws = [{'guest': 'web01', 'host_port': 8080, 'guest_port': 80}, {'guest': 'db01', 'host_port': 5432},
            {'guest': 'app', 'host_port': 9000, 'guest_ip': '192.168.122.99'}, {'guest': 'app', 'host_port': 9001},
            {'guest': 'ghost', 'host_port': 7000}]
    complete, unresolved = RUN._resolve(fakes.FakeModule(PARAMS), view, raws)
    assert [(raw['guest'], raw['guest_ip']) for raw in complete] == [
        ('web01', '192.168.122.10'), ('db01', 'fd00::5'), ('app', '192.168.122.99'), ('app', '192.168.122.20')]
    assert [(item['label'], item['verdict'], item['failed']) for item in unresolved] == [
        ('ghost tcp/7000->7000', 'broken', 'guest')]
    assert len(backend.read_with) == 2           # our DNATs are read once per family, not once per forward
