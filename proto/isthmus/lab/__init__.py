"""The network-namespace lab: namespaces and processes (`netns`), the demo topology and its
configs (`topology`), a running mesh (`mesh`), packet captures (`capture`), a TCP echo
probe (`probe`) and `isthmus demo` (`demo`).

Stdlib and subprocess only (`ip`, `sysctl`, `nft`, `tcpdump`, `ping`); the controller and the
edges run as processes, never imported: this package must not import `controller` or `edge`.
"""
