"""Which statements a read may run. ``readonly = 1`` refuses writes, DDL and setting changes, but
lets ``KILL QUERY`` (which would kill the inserts), ``SYSTEM STOP MERGES`` (after which parts pile
up until inserts fail) and ``INTO OUTFILE`` (a file written by the worker, on chDB) through, and
chDB runs every statement of a text. So a read is one statement, whose syntax tree (ClickHouse's
own ``EXPLAIN AST``, which parses and runs nothing) is a SELECT, SHOW, DESCRIBE, EXISTS or
EXPLAIN writing no file.
"""

from __future__ import annotations

# The syntax tree's root, as EXPLAIN AST names it, of the statements a read may be.
_READING = ("SelectWithUnionQuery", "SelectIntersectExceptQuery", "Explain", "Show", "Describe", "Exists")


class StatementRefused(ValueError):
    """A statement that is not one read."""


def one_statement(sql: str) -> str:
    """``sql`` without a final semicolon; :class:`StatementRefused` if it holds another statement.

    Quotes and comments are skipped as ClickHouse's lexer does, or more narrowly (block comments
    end at the first ``*/``, ``#`` does not start one): a semicolon the lexer would skip and this
    does not only refuses a statement, never lets a second one through."""
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            i += 1
            while i < n and sql[i] != c:
                i += 2 if sql[i] == "\\" else 1
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == ";":
            if sql[i + 1:].strip():
                raise StatementRefused("one statement per query (a ';' is followed by more)")
            return sql[:i]
        else:
            i += 1
    return sql


def check_tree(ast: str) -> None:
    """:class:`StatementRefused` unless ``ast`` (EXPLAIN AST's text) is of a reading statement
    that writes no file."""
    lines = ast.splitlines()
    root = lines[0].strip() if lines else ""
    if not root.startswith(_READING):
        kind = root.split(" ")[0] or "an empty statement"
        raise StatementRefused(f"{kind} is not a SELECT, SHOW, DESCRIBE, EXISTS or EXPLAIN statement")
    # A literal right under the root is INTO OUTFILE's file name (or its compression).
    if any(line.startswith(" Literal ") for line in lines[1:]):
        raise StatementRefused("INTO OUTFILE would write a file")
