"""A tiny ML2 mechanism driver for an agentless test cloud: binds every port on its first segment.

Registered as `minicloud` under the entry point group `neutron.ml2.mechanism_drivers`. No agent plugs anything:
ports report ACTIVE so that Nova can boot (fake driver), but nothing is routable.
"""
from neutron_lib import constants
from neutron_lib.api.definitions import portbindings
from neutron_lib.plugins.ml2 import api


class MiniCloudMechanismDriver(api.MechanismDriver):
    def initialize(self):
        pass

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            context.set_binding(segment[api.ID], portbindings.VIF_TYPE_OVS,
                                {portbindings.CAP_PORT_FILTER: True},
                                status=constants.PORT_STATUS_ACTIVE)
            return
