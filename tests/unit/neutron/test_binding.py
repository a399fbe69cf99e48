"""Which segments a chassis can carry, and what Nova is told to plug."""
from dragonflow.model import Chassis
from dragonflow.neutron.mech_driver import serves, vif_details

CHASSIS = Chassis(id='c1', tunnel_ip='192.0.2.1', tunnel_types=['geneve'],
                  physical_networks=['physnet1'], datapath_type='netdev')


def segment(network_type, physnet=None):
    return {'id': 'seg', 'network_type': network_type, 'physical_network': physnet,
            'segmentation_id': 7}


def test_tunnels_of_its_types_and_physnets_of_its_mappings():
    assert serves(CHASSIS, segment('geneve'))
    assert not serves(CHASSIS, segment('vxlan'))
    assert serves(CHASSIS, segment('vlan', 'physnet1'))
    assert serves(CHASSIS, segment('flat', 'physnet1'))
    assert not serves(CHASSIS, segment('vlan', 'physnet2'))


def test_vif_details_are_br_int_filtered_with_the_chassis_datapath():
    details = vif_details(CHASSIS)
    assert details['bridge_name'] == 'br-int' and details['port_filter'] is True
    assert details['datapath_type'] == 'netdev' and details['ovs_hybrid_plug'] is False
