# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The documentation of the options that scope forwards (kvmnet.nat.forwards, kvmnet.nat.doctor), written once.

Their argument spec is plugins/module_utils/_schema.py, and tests/unit/plugins/module_utils/test_schema.py
holds the two together. The suboptions of ``forwards`` are not here: ansible-doc merges a fragment into a
module's options one option deep, so a module that adds a suboption (the doctor's send and expect) or
changes one (its guest_ip is optional) would have to replace the fragment's suboptions whole; and
ansible-test's sanity tests read a fragment as string literals, so two variants cannot be built from one
text. Each module documents its ``forwards`` suboptions; their spec is _schema.forward_options().
"""

from __future__ import annotations


class ModuleDocFragment:
    """kvmnet.nat.forward: public_ip, public_ip6, in_interface, chain_prefix."""

    DOCUMENTATION = r"""
options:
  public_ip:
    description:
      - Only traffic addressed to this IPv4 address is forwarded. This is what keeps a DNAT for
        port 80 from stealing the host's own web server on its other addresses.
      - At least one of O(public_ip) and O(in_interface) (or their per-forward overrides) is required.
    type: str
  public_ip6:
    description:
      - Like O(public_ip), for forwards whose O(forwards[].guest_ip) is IPv6.
    type: str
  in_interface:
    description:
      - Only traffic arriving on this interface is forwarded.
      - With O(in_interface) set, hairpin connections from the guest network do not match (they do
        not arrive on that interface); use O(public_ip) alone if guests must reach each other through
        the public address.
    type: str
  chain_prefix:
    description:
      - Prefix of the chains the collection owns (C(<prefix>_DNAT), C(<prefix>_SNAT), C(<prefix>_FWD)).
      - 1 to 16 upper-case letters or digits, starting with a letter.
      - Chains starting with C(<prefix>_) are considered owned. If such a chain exists and holds rules
        M(kvmnet.nat.forwards) did not write, it refuses to run.
    type: str
    default: KVMNAT
"""
