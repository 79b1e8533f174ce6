"""isthmus: the small shared domain of the controller and the edges.

Owns: edge names, keys, endpoints, the route map, and the one pb <-> domain seam.
Must never import `controller`, `edge`, the lab (`isthmus_lab`) or the daemons' shared I/O
(`isthmus_io`: key files, the metrics server): import-linter contracts. Pure where it can be.
"""

__version__ = "0.1.0"
