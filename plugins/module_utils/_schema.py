# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The argument spec of a forward, and of the options every module that takes forwards has: PRIVATE.

Written once here and used by kvmnet.nat.forwards and kvmnet.nat.doctor; their documentation is the doc
fragment kvmnet.nat.forward (plugins/doc_fragments/forward.py), and tests/unit/plugins/module_utils/
test_schema.py holds the two together. Values are checked by _forward (one parser, one message per check).
"""

from __future__ import annotations

DEFAULT_PREFIX = 'KVMNAT'


def forward_options(guest_ip_required=True):
    """The options of one forward (the elements of ``forwards``). The doctor finds a missing guest_ip."""
    return dict(
        guest=dict(type='str', required=True),
        guest_ip=dict(type='str', required=True) if guest_ip_required else dict(type='str'),
        proto=dict(type='str', default='tcp'),
        host_port=dict(type='raw', required=True),
        guest_port=dict(type='raw'),
        sources=dict(type='list', elements='str', default=[]),
        masquerade=dict(type='str', default='auto'),
        public_ip=dict(type='str'),
        in_interface=dict(type='str'),
        guest_network=dict(type='str'),
        allow_in_use=dict(type='bool', default=False),
    )


# the keys of a forward, as _forward.parse_forwards reads them
FORWARD_KEYS = tuple(forward_options())

# what the doctor takes per forward besides: a datagram to send to a UDP guest port and what must come back
DIAGNOSE_OPTIONS = dict(
    send=dict(type='str'),
    expect=dict(type='str'),
)


def scope_options():
    """The module-level options that scope the forwards and name what the collection owns."""
    return dict(
        public_ip=dict(type='str'),
        public_ip6=dict(type='str'),
        in_interface=dict(type='str'),
        chain_prefix=dict(type='str', default=DEFAULT_PREFIX),
        persist_path=dict(type='path'),
    )
