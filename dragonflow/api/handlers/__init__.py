"""One handler per API resource: the rules of networks, subnets, ports and routers."""
