# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_schema and the doc fragment kvmnet.nat.forward describe the same options (issue 20).

validate-modules holds each module's documentation to its argument spec; this holds the fragment to
_schema directly, so that a change to one without the other fails here, naming the option.
"""

from __future__ import annotations

import yaml

from ansible_collections.kvmnet.nat.plugins.doc_fragments.forward import ModuleDocFragment
from ansible_collections.kvmnet.nat.plugins.module_utils import _forward
from ansible_collections.kvmnet.nat.plugins.module_utils import _schema

SPEC_KEYS = ('type', 'required', 'default', 'elements', 'choices')


def _spec_view(options):
    return {name: {key: spec[key] for key in SPEC_KEYS if spec.get(key) not in (None, False)}
            for name, spec in options.items()}


def _doc_view(options):
    return {name: {key: doc[key] for key in SPEC_KEYS if doc.get(key) not in (None, False)}
            for name, doc in options.items()}


def test_the_scope_options_are_documented_as_specified():
    documented = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)['options']
    spec = _schema.scope_options()
    del spec['persist_path']        # each module says what it does with it: forwards writes, doctor compares
    assert _doc_view(documented) == _spec_view(spec)


def test_every_key_of_a_forward_is_a_key_the_engine_reads():
    raw = {key: None for key in _schema.FORWARD_KEYS}
    fields = _forward._parse_fields(dict(raw, guest='web01', guest_ip='192.168.122.10', host_port=80),
                                    _forward._Problems())
    assert set(_schema.FORWARD_KEYS) - {'allow_in_use'} <= set(fields) | {'host_port', 'guest_port'}
