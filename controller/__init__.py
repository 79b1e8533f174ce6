"""isthmus controller: keeps the map route -> edge and streams it to every edge.

Owns: the controller config (`config`), the error contract (`errors`), admission of what
edges advertise (`registry`, pure), the persisted state (`store`), the versioned map
fan-out (`publisher`), the gRPC shell (`service`) and the composition root (`__main__`).
Must never import `edge`; talks to edges only through `isthmus.v1` via `isthmus.convert`.
"""
