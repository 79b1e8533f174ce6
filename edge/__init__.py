"""isthmus edge: one per site; owns the TUN device, kernel routes and the tunnel to other edges."""
