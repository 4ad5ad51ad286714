"""Tests of orthonode.index.db's transactions and the index's timestamps, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy.exc import StatementError
from support.index_rows import T0, Index, count, header, record, stored

from orthonode.index import studies
from orthonode.index.db import transaction
from orthonode.index.models import Instance, Study


def test_transaction_rolls_back_on_error(index: Index) -> None:
    with pytest.raises(RuntimeError), transaction(index.sessions) as session:
        studies.record_instance(
            session, header(), stored(header()), calling_aet=None, now=T0, max_instances_per_study=10
        )
        raise RuntimeError("boom")
    assert count(index, Study) == 0
    assert count(index, Instance) == 0


def test_naive_datetimes_are_refused(index: Index) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        record(index, header(), now=datetime(2024, 1, 2, 10, 0, 0))


def test_unreachable_says_why_in_one_line_without_the_statement_or_its_parameters() -> None:
    from sqlalchemy.exc import IntegrityError, OperationalError

    from orthonode.index.db import unreachable

    cause = ConnectionRefusedError("connection failed: server at 127.0.0.1:5432 refused\nis it running?")
    exc = OperationalError("INSERT INTO studies (patient_id) VALUES (%s)", ("PAT-SECRET-1",), cause)
    reason = unreachable(exc)
    assert reason == "ConnectionRefusedError: connection failed: server at 127.0.0.1:5432 refused"
    assert "PAT-SECRET-1" not in reason and "INSERT" not in reason
    assert unreachable(IntegrityError("INSERT", {}, Exception("duplicate"))) is None
    assert unreachable(ValueError("not a database error")) is None
