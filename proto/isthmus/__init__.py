"""isthmus: the small shared domain of the controller and the edges.

Owns: edge names, keys, endpoints, the route map, and the one pb <-> domain seam.
Must never import `controller` or `edge` (an import-linter contract).
"""

__version__ = "0.1.0"
