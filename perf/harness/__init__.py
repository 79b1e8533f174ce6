"""The system benchmark: two sites in network namespaces, one overlay after another.

`python -m perf.harness` (or `isthmus bench`) builds the sites once (`topology`), then per
round sets up each overlay (`overlays`: plain underlay, isthmus, wireguard-go, nebula,
tinc), measures it (`measure`: iperf3, ping, CPU of the overlay's processes) and tears it
down, and finally writes JSON, a Markdown table and a PNG chart (`report`, `png`).
Every figure is also a ratio to the plain underlay and to the best peer of the same run.
"""
