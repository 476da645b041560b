"""From the client: each declared port answers with the right guest, and nothing else opened
(the tests shared with the other scenarios, extensions/molecule/shared/reachability.py)."""
# pylint: disable-next=unused-import  # collected by pytest from this module
from reachability import (test_allow_list_refuses_other_sources, test_declared_port_answers_with_its_guest,  # noqa: F401
                          test_guest_network_is_not_reachable_directly, test_host_service_on_80_still_answers,
                          test_undeclared_port_is_not_forwarded)
