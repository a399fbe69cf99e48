"""A lab on one machine: chassis and VMs as network namespaces, each chassis with its own Open
vSwitch, used by `dfctl demo`, the data-plane tests and the benchmarks."""
