"""The I/O both daemons share: key files (`keyfiles`, and `isthmus keygen` in `keygen`) and
the metrics HTTP server (`metricsserver`).

The shared domain (`isthmus`) stays pure of these: it holds key values and their pure
functions; this package reads and writes the files and serves the sockets. It imports
neither `controller`, `edge` nor `isthmus_lab`.
"""
