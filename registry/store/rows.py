"""Large results read as plain tuples."""

from __future__ import annotations


def driver_rows(conn, statement) -> list[tuple]:
    """Every row of ``statement`` on ``conn`` (a Connection or a Session), as the driver's tuples.

    For results of 10^4 rows and more, wrapping each in a SQLAlchemy ``Row`` is a large share
    of the call; only for columns that need no result processing (ints, floats, strings).
    """
    result = conn.execute(statement)
    try:
        return result.cursor.fetchall()
    finally:
        result.close()
