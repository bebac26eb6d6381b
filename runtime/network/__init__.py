"""Container networking: bridge networks, addresses, published ports, name resolution.

Modules: ``manager`` (the facade: lease, attach/detach, forget, reclaim),
``networks`` (network records), ``ipam`` (address leases), ``ports`` (``-p``
and the port reservations), ``netns`` (namespace bind mounts), ``netlink``
(bridge and veth through pyroute2), ``nft`` (the nftables table), ``dns``
(/etc/hosts, the ``--dns`` and ``--add-host`` checks; resolv.conf is
``runtime.initlayer``'s). This package imports nothing itself: the
``--network none`` path never pays for any of it.

On disk, under ``<root>/network/`` (all changed under ``lock``)::

    networks.json            network records (networks.py)
    leases.json              addresses leased to containers (ipam.py)
    endpoints/<id>.json      a running container's endpoint: veth, netns, address, ports
    endpoints/<id>.lock      held (flock) by the container's monitor while it runs

An endpoint record is written before anything it names is made, and teardown
is idempotent, so whatever a killed process leaves is found by the next
attach, ``rm`` or ``prune`` (an endpoint whose lock is free has no owner) and
undone: the veth, the namespace mount, the nftables rules. pybuild's
nftables table exists only while a container runs; a bridge, once made,
stays (like docker0) until ``prune`` finds it idle or its network is
removed. Heavy imports (pyroute2) happen only when a bridge is touched.
"""
