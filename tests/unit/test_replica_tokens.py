"""The pure side of read replicas (memstate_pg/_core/replicas.py): write tokens, the commit
position the standby must reach, a probe's verdict, names that never show a password."""

from __future__ import annotations

import pytest

from memstate_pg import ValidationFailed
from memstate_pg._core.pools import ConnectHealth
from memstate_pg._core.replicas import (
    Replica,
    ReplicaSet,
    commit_lsn,
    format_token,
    label,
    lsn_int,
    parse_token,
)


def test_a_token_round_trips_and_is_cookie_safe():
    lsn = lsn_int("16/B374D848")
    assert lsn == (0x16 << 32) | 0xB374D848
    token = format_token(lsn)
    assert token == "00000016B374D848" and token.isalnum()
    assert parse_token(token) == lsn == parse_token(token.lower()) == parse_token("16/B374D848")
    assert parse_token(None) == 0


@pytest.mark.parametrize("bad", ["", "  ", "xyz", "0/0/0", "1" * 17, "g" * 16, "1/", 42, b"1/2"])
def test_a_malformed_token_is_refused(bad):
    with pytest.raises(ValidationFailed):
        parse_token(bad)  # type: ignore[arg-type]


def _row(lsn: int, block: int = 8192, segment: int = 16 << 20) -> dict:
    return {"lsn": f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}", "block": block, "segment": segment}


def test_the_position_after_a_page_header_steps_back_to_the_page_boundary():
    # a record that ended exactly at a page boundary: the insert position is reported past
    # the next page's header, which an idle standby would never reach
    assert commit_lsn(_row(5 * 8192 + 24)) == 5 * 8192
    assert commit_lsn(_row(3 * (16 << 20) + 40)) == 3 * (16 << 20)  # a segment's long header
    assert commit_lsn(_row(5 * 8192 + 40)) == 5 * 8192 + 40  # mid-segment: a real end
    assert commit_lsn(_row(5 * 8192 + 48)) == 5 * 8192 + 48


def _set(max_lag: float = 10) -> tuple[ReplicaSet, Replica]:
    replica = Replica("r", pool=None, owned=False, health=ConnectHealth(1, watched=False))
    return ReplicaSet([replica], wait=0.5, max_lag=max_lag), replica


def test_a_probe_waits_for_the_needed_position_before_it_judges_lag():
    rs, r = _set(max_lag=1)
    behind = {"replay": "0/100", "lag": 99.0}
    assert rs.probed(r, behind, needed=0x200) == "wait"  # replaying our write: no verdict
    assert rs.probed(r, {"replay": "0/200", "lag": 0.0}, needed=0x200) is None
    assert rs.fresh(r, 0x200) and not rs.fresh(r, 0x201)
    assert rs.probed(r, {"replay": "0/300", "lag": 5.0}, needed=0x200) == "lagging"
    assert rs.probed(r, {"replay": None, "lag": 0.0}, needed=0) == "not_standby"


def test_an_unrecorded_write_sends_reads_to_the_primary_until_a_later_one_is_recorded():
    rs, _ = _set()
    rs.recorded(_row(0x500))
    assert rs.needed(None) == 0x500 and rs.needed("0000000000000600") == 0x600
    rs.recorded(None)
    assert rs.needed(None) is None
    rs.recorded(_row(0x400))  # never backwards
    assert rs.needed(None) == 0x500 and rs.token == "0000000000000500"


def test_settings_are_checked():
    r = Replica("r", pool=None, owned=False, health=ConnectHealth(1, watched=False))
    for wait, lag in ((-1, 1), (61, 1), (True, 1), (0.5, 0), (0.5, -2), ("1", 1)):
        with pytest.raises(ValueError):
            ReplicaSet([r], wait=wait, max_lag=lag)  # type: ignore[arg-type]


def test_a_replica_is_named_without_its_password():
    name = label("postgresql://app:s3cret@db-replica:6432/mem?sslmode=require")
    assert name == "db-replica:6432/mem" and "s3cret" not in name
    assert "s3cret" not in label("host=/run/pg dbname=mem password=s3cret")
