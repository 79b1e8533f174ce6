"""Edge authentication: challenges (with a manual clock), proofs and the Authenticator."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.bindings import crypto_box_seed_keypair

from isthmus.auth import (
    AUTH_LEN,
    AUTH_METADATA,
    CHALLENGE_LEN,
    Authenticator,
    AuthError,
    ChallengeBook,
    auth_value,
    edge_shared_secret,
    make_proof,
    parse_auth,
)
from isthmus.keys import PublicKey
from isthmus.signing import ControllerKey
from isthmus.v1 import isthmus_pb2 as pb

CONTROLLER = ControllerKey.from_seed(bytes([5]) * 32)
REPLICA = b"replica1"
REGISTER = "/isthmus.v1.Controller/Register"
START = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def counter_random() -> Callable[[int], bytes]:
    counter = itertools.count()
    return lambda n: next(counter).to_bytes(n, "big")


def book(clock: Clock, replica: bytes = REPLICA, max_redeemed: int = 100_000) -> ChallengeBook:
    return ChallengeBook(
        CONTROLLER.challenge_secret, replica, clock, counter_random(), max_redeemed=max_redeemed
    )


def edge(seed: int) -> tuple[PublicKey, bytes]:
    public, private = crypto_box_seed_keypair(bytes([seed]) * 32)
    return PublicKey(public), private


EDGE, EDGE_PRIVATE = edge(1)
OTHER, OTHER_PRIVATE = edge(2)
REQUEST = pb.RegisterRequest(name="vpc-a", public_key=EDGE.raw, routes=["10.0.0.0/16"])
REQUEST_BYTES = REQUEST.SerializeToString(deterministic=True)


def reason(fn: Callable[[], object]) -> str:
    with pytest.raises(AuthError) as info:
        fn()
    return str(info.value)


# --- challenges ---------------------------------------------------------------------


def test_challenge_layout() -> None:
    c = book(Clock(START + 0.25)).issue()
    assert len(c) == CHALLENGE_LEN == 49
    assert c[0] == 1
    assert c[1:9] == REPLICA
    assert int.from_bytes(c[9:17], "big") == int((START + 0.25) * 1000)
    assert c[17:33] == bytes(16)  # the first draw of counter_random


def test_challenges_differ_and_redeem_once() -> None:
    b = book(Clock())
    first, second = b.issue(), b.issue()
    assert first != second
    b.redeem(first)
    b.redeem(second)
    assert reason(lambda: b.redeem(first)).startswith("challenge already used")
    assert len(b) == 2


def test_expiry_at_the_lifetime() -> None:
    clock = Clock()
    b = book(clock)
    good, late = b.issue(), b.issue()
    clock.now += 60.0
    b.redeem(good)
    clock.now += 0.001
    assert reason(lambda: b.redeem(late)).startswith("challenge expired: issued 60.0 s ago")


def test_from_the_future_beyond_the_slack() -> None:
    clock = Clock(START + 5.0)
    b = book(clock)
    near = b.issue()
    clock.now = START + 5.001
    far = b.issue()
    clock.now = START
    b.redeem(near)
    assert reason(lambda: b.redeem(far)).startswith("challenge from the future")


def test_other_replica_is_refused() -> None:
    clock = Clock()
    mine, theirs = book(clock), book(clock, replica=b"replica2")
    c = theirs.issue()
    assert reason(lambda: mine.redeem(c)).startswith("challenge from another replica")
    theirs.redeem(c)


def test_other_controller_key_is_forged() -> None:
    clock = Clock()
    other = ChallengeBook(
        ControllerKey.from_seed(bytes(32)).challenge_secret, REPLICA, clock, counter_random()
    )
    c = other.issue()
    assert reason(lambda: book(clock).redeem(c)) == "challenge forged: its mac is wrong"


@given(st.integers(min_value=8, max_value=CHALLENGE_LEN * 8 - 1))
def test_any_bit_flip_is_forged(bit: int) -> None:
    b = book(Clock())
    c = bytearray(b.issue())
    c[bit // 8] ^= 1 << (bit % 8)
    assert reason(lambda: b.redeem(bytes(c))) == "challenge forged: its mac is wrong"


@pytest.mark.parametrize(
    "challenge", [b"", bytes(48), bytes(50), b"\x02" + bytes(48)], ids=["0", "48", "50", "v2"]
)
def test_malformed(challenge: bytes) -> None:
    assert reason(lambda: book(Clock()).redeem(challenge)).startswith("challenge malformed")


def test_redeemed_set_is_bounded_and_pruned_at_expiry() -> None:
    clock = Clock()
    b = book(clock, max_redeemed=3)
    for _ in range(3):
        b.redeem(b.issue())
    extra = b.issue()
    assert reason(lambda: b.redeem(extra)).startswith("too many outstanding challenges")
    clock.now += 30
    fresh = b.issue()
    assert reason(lambda: b.redeem(fresh)).startswith("too many outstanding challenges")
    clock.now += 30.001  # the first three are past their lifetime now
    b.redeem(fresh)
    assert len(b) == 1


def test_check_does_not_use_up() -> None:
    b = book(Clock())
    c = b.issue()
    b.check(c)
    b.check(c)
    b.redeem(c)
    assert reason(lambda: b.check(c)).startswith("challenge already used")


def test_book_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="a replica id is 8 bytes, got 3"):
        ChallengeBook(CONTROLLER.challenge_secret, b"abc", Clock(), counter_random())


# --- proofs and the auth value -------------------------------------------------------


def test_shared_secret_agrees_on_both_sides() -> None:
    assert edge_shared_secret(EDGE_PRIVATE, CONTROLLER.public) == CONTROLLER.shared_secret(EDGE)


def test_auth_value_layout() -> None:
    c = book(Clock()).issue()
    value = auth_value(EDGE_PRIVATE, EDGE, CONTROLLER.public, REGISTER, c, REQUEST_BYTES)
    assert len(value) == AUTH_LEN == 113
    header = parse_auth(value)
    assert header.edge_key == EDGE and header.challenge == c
    shared = CONTROLLER.shared_secret(EDGE)
    assert header.proof == make_proof(shared, REGISTER, c, EDGE, REQUEST_BYTES)
    assert parse_auth(base64.b64encode(value).decode()) == header
    assert parse_auth(base64.b64encode(value).decode().rstrip("=")) == header
    assert value.hex() not in repr(header)


def test_auth_value_refuses_a_bad_challenge() -> None:
    with pytest.raises(ValueError, match="a challenge is 49 bytes, got 3"):
        auth_value(EDGE_PRIVATE, EDGE, CONTROLLER.public, REGISTER, b"abc", REQUEST_BYTES)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, f"missing {AUTH_METADATA} metadata"),
        (b"", f"missing {AUTH_METADATA} metadata"),
        ("", f"missing {AUTH_METADATA} metadata"),
        (bytes(112), f"{AUTH_METADATA}: 112 bytes; expected 113"),
        (bytes(114), f"{AUTH_METADATA}: 114 bytes; expected 113"),
        ("not base64!", f"{AUTH_METADATA}: not binary metadata or base64"),
        (bytes(113), f"{AUTH_METADATA}: edge key: the public key is a low-order"),
    ],
)
def test_parse_auth_refusals(value: bytes | str | None, message: str) -> None:
    assert reason(lambda: parse_auth(value)).startswith(message)


# --- the Authenticator ---------------------------------------------------------------


class Fixture:
    def __init__(self) -> None:
        self.clock = Clock()
        self.book = book(self.clock)
        self.auth = Authenticator(CONTROLLER, self.book)
        self.known = {EDGE.raw, OTHER.raw}

    def key_known(self, key: PublicKey) -> bool:
        return key.raw in self.known

    def value(
        self,
        method: str = REGISTER,
        request: bytes = REQUEST_BYTES,
        challenge: bytes | None = None,
        private: bytes = EDGE_PRIVATE,
        key: PublicKey = EDGE,
    ) -> bytes:
        c = self.auth.challenge() if challenge is None else challenge
        return auth_value(private, key, CONTROLLER.public, method, c, request)

    def verify(self, value: bytes | str | None, method: str = REGISTER) -> PublicKey:
        return self.auth.verify(value, method, REQUEST_BYTES, self.key_known)


def test_good_proof_is_accepted_once() -> None:
    f = Fixture()
    value = f.value()
    assert f.verify(value) == EDGE
    assert reason(lambda: f.verify(value)).startswith("challenge already used")


def test_base64_text_value_is_accepted() -> None:
    f = Fixture()
    assert f.verify(base64.b64encode(f.value()).decode()) == EDGE


def _bound_cases(f: Fixture) -> dict[str, bytes]:
    genuine = f.auth.challenge()  # a different, genuine challenge of this replica
    c = f.auth.challenge()
    proof_for_other_challenge = f.value(challenge=genuine)[-32:]
    return {
        "method": f.value(method="/isthmus.v1.Controller/Watch", challenge=c),
        "request": f.value(request=REQUEST_BYTES + b"\x00", challenge=f.auth.challenge()),
        "challenge": EDGE.raw + f.auth.challenge() + proof_for_other_challenge,
        "key": OTHER.raw + f.value(challenge=f.auth.challenge())[32:],
        "private key": f.value(private=OTHER_PRIVATE, challenge=f.auth.challenge()),
    }


@pytest.mark.parametrize("case", ["method", "request", "challenge", "key", "private key"])
def test_proof_is_bound_to_every_input(case: str) -> None:
    f = Fixture()
    value = _bound_cases(f)[case]
    message = reason(lambda: f.verify(value))
    assert message.startswith("proof wrong for edge key")
    assert value.hex() not in message and base64.b64encode(value).decode() not in message


def test_other_controller_key_gives_a_wrong_proof() -> None:
    f = Fixture()
    c = f.auth.challenge()
    other = ControllerKey.from_seed(bytes([6]) * 32).public
    value = auth_value(EDGE_PRIVATE, EDGE, other, REGISTER, c, REQUEST_BYTES)
    assert reason(lambda: f.verify(value)).startswith("proof wrong")


def test_a_wrong_proof_does_not_use_up_the_challenge() -> None:
    f = Fixture()
    c = f.auth.challenge()
    bad = f.value(method="/isthmus.v1.Controller/Watch", challenge=c)
    with pytest.raises(AuthError):
        f.verify(bad)
    assert f.verify(f.value(challenge=c)) == EDGE


def test_unknown_key_is_refused() -> None:
    f = Fixture()
    f.known = {OTHER.raw}
    value = f.value()
    message = reason(lambda: f.verify(value))
    assert message.startswith(f"unknown edge key {EDGE}")
    assert value.hex() not in message


def test_checks_run_in_the_documented_order() -> None:
    f = Fixture()
    f.known = set()
    # A bad challenge is reported before an unknown key, an unknown key before a bad proof.
    stale = f.value()
    f.clock.now += 61
    assert reason(lambda: f.verify(stale)).startswith("challenge expired")
    bad_proof = f.value()[:-1] + b"\x00"
    assert reason(lambda: f.verify(bad_proof)).startswith("unknown edge key")


@pytest.mark.parametrize(
    "edit",
    [
        lambda v: v[:50],
        lambda v: v[:40] + bytes([v[40] ^ 1]) + v[41:],
        lambda v: v[:-1] + bytes([v[-1] ^ 1]),
        lambda v: v + b"\x00",
        lambda v: bytes(32) + v[32:],
    ],
)
def test_the_auth_value_never_appears_in_the_error(edit: Callable[[bytes], bytes]) -> None:
    f = Fixture()
    value = edit(f.value())
    message = reason(lambda: f.verify(value))
    shared = CONTROLLER.shared_secret(EDGE)
    for secret in (value, value[32:], value[-32:], shared, CONTROLLER.seed, EDGE_PRIVATE):
        for form in (secret.hex(), base64.b64encode(secret).decode(), repr(secret)):
            assert form not in message
