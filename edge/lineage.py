"""Which signed map an edge may take after the one it has (docs/controller.md, "Epochs").

Owns the edge's rules for map signatures, versions and epochs. Pure: the map the edge
has (as signed, before expired routes are left out), the candidate (a full map, or the
result of patching a delta onto the map it has), and the controller's public key come in;
a verdict comes out. No clock, no I/O, no logging. Rules, in order:
- The candidate's signature must verify (isthmus.mapsig) against the controller's key
  over the whole candidate map, its version and its epoch; a missing or bad signature
  refuses it (`MapRefused`). So does nothing else: an altered endpoint, a deleted edge, a
  removed route, a rolled-back version or a delta patched onto another base all change
  what is signed.
- Same epoch: a lower version than the one the edge has is a rollback (refused); the
  same version is nothing new (`admit` returns False) unless it is the very same
  signed map (True: applying it again is harmless and re-checks the kernel); a higher
  version is taken.
- Another epoch (the controller's state was created afresh): taken only as a whole map
  and only when the new epoch was created later than the edge's, else a rollback.
- The edge has no signed map yet (none, or a cache from before maps were signed), or
  only version 0 (a controller with no state stored yet, whose epoch is not stored
  either: replicas starting on an empty store each make one until the first write):
  any candidate that verifies is taken.
"""

from __future__ import annotations

from isthmus.mapsig import SignedMap, epoch_created_ms, epoch_text, verify_map
from isthmus.signing import ControllerPublicKey


class MapRefused(Exception):
    """A candidate map is unsigned, forged, or a rollback; the message says which."""


def admit(
    have: SignedMap, candidate: SignedMap, *, full: bool, controller_key: ControllerPublicKey
) -> bool:
    """Whether to apply `candidate` after `have`: True apply, False nothing new.

    Raises:
        MapRefused: the signature is missing or does not verify, or the candidate would
            take the edge back (an older version of its epoch, or an older epoch).
    """
    version = candidate.version
    if not candidate.signature:
        raise MapRefused(
            f"map version {version} is not signed; every map must carry the controller's signature"
        )
    if not verify_map(controller_key, candidate):
        raise MapRefused(
            f"map version {version}: the map signature does not verify against "
            "controller_public_key (altered in transit, or signed for another map, "
            "version or epoch)"
        )
    if not have.signature or have.version == 0:
        return True
    if candidate.epoch == have.epoch:
        if version < have.version:
            raise MapRefused(
                f"map version {version} is older than version {have.version} already "
                f"applied in epoch {epoch_text(have.epoch)}: a rollback"
            )
        if version == have.version:
            return candidate.signature == have.signature
        return True
    if not full:
        raise MapRefused(
            f"a delta to map version {version} moves to epoch {epoch_text(candidate.epoch)} "
            f"from {epoch_text(have.epoch)}; only a whole map may change the epoch"
        )
    if epoch_created_ms(candidate.epoch) <= epoch_created_ms(have.epoch):
        raise MapRefused(
            f"map version {version} is of epoch {epoch_text(candidate.epoch)}, created "
            f"no later than epoch {epoch_text(have.epoch)} this edge is on: a rollback"
        )
    return True
