"""The network-namespace lab: namespaces and processes (`netns`), the demo topology and its
configs (`topology`), a running mesh (`mesh`: its state and names in `layout`, its
controllers and etcd in `controllers`, its edges in `edges`, probes, pings, captures and the
impairment proxy in `traffic`, how it runs commands and polls in `commands`), packet captures
(`capture`), a TCP echo probe (`probe`), `isthmus demo` (`demo`) and the `isthmus bench`
launcher (`bench`).

Stdlib and subprocess only (`ip`, `sysctl`, `nft`, `tcpdump`, `ping`); the controller and the
edges run as processes, never imported: this package must not import `controller` or `edge`
(an import-linter contract), and the shared `isthmus` package never imports it.
"""
