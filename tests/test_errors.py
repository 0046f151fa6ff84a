"""The classification table: every kind of failure becomes a status a caller can act on."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from asyncpg import exceptions as pg

from participation_grpc import errors

Code = grpc.StatusCode
BUSY = (Code.UNAVAILABLE, "DATABASE_BUSY")
GONE = (Code.UNAVAILABLE, "DATABASE_UNAVAILABLE")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (pg.LockNotAvailableError("lock timeout"), BUSY),  # 55P03, DB_LOCK_TIMEOUT_MS
        (pg.QueryCanceledError("statement timeout"), BUSY),  # 57014, DB_STATEMENT_TIMEOUT_MS
        (pg.SerializationError("after the retries"), BUSY),  # 40001
        (pg.DeadlockDetectedError("after the retries"), BUSY),  # 40P01
        (pg.UniqueViolationError("after the retries"), BUSY),  # 23505
        (pg.ForeignKeyViolationError("after the retries"), BUSY),  # 23503
        (pg.ObjectInUseError("in use"), BUSY),  # 55006
        (pg.AdminShutdownError("terminating connection"), GONE),  # 57P01, a restart
        (pg.CannotConnectNowError("starting up"), GONE),  # 57P03
        (pg.TooManyConnectionsError("too many"), GONE),  # 53300
        (pg.ConnectionDoesNotExistError("closed mid-call"), GONE),  # 08003
        (pg.ReadOnlySQLTransactionError("a standby after failover"), GONE),  # 25006
        (pg.IdleInTransactionSessionTimeoutError("idle"), GONE),  # 25P03
        (pg.InternalClientError("cannot switch to state 12"), GONE),  # seen during a restart
        (pg.InterfaceError("connection is closed"), GONE),
        (ConnectionResetError("reset by peer"), GONE),
        (OSError("no route to host"), GONE),
        (pg.InvalidTextRepresentationError("bad uuid"), (Code.INVALID_ARGUMENT, "INVALID_ARGUMENT")),
        (pg.ProgramLimitExceededError("index row too big"), (Code.INVALID_ARGUMENT, "INVALID_ARGUMENT")),
        (pg.UndefinedFunctionError("sp_join_activity does not exist"), (Code.INTERNAL, "INTERNAL")),
        (pg.RaiseError("a plain RAISE"), (Code.INTERNAL, "INTERNAL")),
        (pg.CheckViolationError("counter above max"), (Code.INTERNAL, "INTERNAL")),
        (KeyError("a"), (Code.INTERNAL, "INTERNAL")),
        (TimeoutError(), GONE),  # an OSError since Python 3.3: a socket that timed out
    ],
)
def test_each_failure_maps_to_a_status_with_a_reason(exc: BaseException, expected: tuple[Code, str]) -> None:
    error = errors.classify(exc, "JoinActivity")
    assert (error.code, error.reason) == expected
    assert "sp_" not in error.message and "SQLSTATE" not in error.message
    if error.reason == "DATABASE_BUSY":
        assert error.retry_after_seconds


def test_a_rule_violation_keeps_its_reason_and_ids() -> None:
    exc = asyncpg.PostgresError.new(
        {
            "C": "PA009",
            "M": "Cannot join an activity that has already started",
            "D": "ACTIVITY_IN_PAST",
            "H": '{"activity_id": "x"}',
        }
    )
    error = errors.classify(exc, "JoinActivity")
    assert (error.code, error.reason, error.metadata) == (
        Code.FAILED_PRECONDITION,
        "ACTIVITY_IN_PAST",
        {"activity_id": "x"},
    )


def test_internal_errors_are_logged_in_full_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("ERROR", "participation_grpc.errors"):
        errors.classify(KeyError("a"), "JoinActivity")
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is not None
