"""What a read may be: one statement (quotes and comments skipped, never more widely than
ClickHouse does), whose syntax tree reads and writes no file."""

from __future__ import annotations

import pytest

from sluice.streams.statements import StatementRefused, check_tree, one_statement


@pytest.mark.parametrize(
    ("sql", "one"),
    [
        ("SELECT 1", "SELECT 1"),
        ("SELECT 1;", "SELECT 1"),
        ("SELECT 1 ;  \n", "SELECT 1 "),
        ("SELECT ';' AS a, \"x;\" AS `b;`", "SELECT ';' AS a, \"x;\" AS `b;`"),
        ("SELECT 'it''s; \\' ;' -- a; comment\n/* ; */ AS c", "SELECT 'it''s; \\' ;' -- a; comment\n/* ; */ AS c"),
    ],
)
def test_one_statement_keeps_semicolons_in_quotes_and_comments(sql: str, one: str) -> None:
    assert one_statement(sql) == one


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; KILL QUERY WHERE 1",
        "SELECT 1;;",
        "SELECT 'a'; SYSTEM STOP MERGES",
        "SELECT 1 /* /* nested */ ; */",  # ClickHouse would skip it; refusing is the safe side
        "SELECT 1 # ; comment",
        "SELECT 1; -- trailing comment",
    ],
)
def test_a_second_statement_is_refused(sql: str) -> None:
    with pytest.raises(StatementRefused, match=r"^one statement per query"):
        one_statement(sql)


def test_reading_trees_pass() -> None:
    for root in ("SelectWithUnionQuery (children 1)", "Explain EXPLAIN (children 1)", "ShowTables",
                 "DescribeQuery (children 1)", "ExistsTableQuery system one (children 2)"):
        check_tree(f"{root}\n ExpressionList (children 1)\n  Literal UInt64_1\n Identifier JSON")


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ("KillQueryQuery Literal_UInt64_1 ASYNC (children 1)\n Literal UInt64_1", "KillQueryQuery is not a SELECT"),
        ("SYSTEM query", "SYSTEM is not a SELECT, SHOW, DESCRIBE, EXISTS or EXPLAIN statement"),
        ("OptimizeQuery  logs_final (children 1)", "OptimizeQuery is not a SELECT"),
        ("", "an empty statement is not a SELECT"),
        ("SelectWithUnionQuery (children 2)\n ExpressionList (children 1)\n Literal \\'out.txt\\'",
         "INTO OUTFILE would write a file"),
    ],
)
def test_other_trees_are_refused(tree: str, message: str) -> None:
    with pytest.raises(StatementRefused, match=f"^{message}"):
        check_tree(tree)
