"""Filters: the CLI parser builds trees (never SQL); caller text never runs as SQL."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_atlas.errors import StoreError
from ecg_atlas.index import All, Any, Store, Term, compile_filter, parse_filter
from ecg_atlas.index.schema import Column

from .conftest import IDENTITY, upsert_rows

COLUMNS = {
    "age": Column("age", "BIGINT", True),
    "sex": Column("sex", "VARCHAR", True),
    "labels": Column("labels", "VARCHAR[]", True),
    "paced": Column("paced", "BOOLEAN", True),
}


@pytest.mark.parametrize("text,tree", [
    ("age>=60", Term("age", ">=", "60")),
    ("sex = F", Term("sex", "=", "F")),
    ("labels contains AF", Term("labels", "contains", "AF")),
    ("sex in (F, 'M X')", Term("sex", "in", ["F", "M X"])),
    ("sex not in [F]", Term("sex", "not in", ["F"])),
    ("note is null", Term("note", "is null")),
    ("note IS NOT NULL", Term("note", "is not null")),
    ("age<>3", Term("age", "!=", "3")),
    ("a=1 and b=2 or c=3", Any([All([Term("a", "=", "1"), Term("b", "=", "2")]), Term("c", "=", "3")])),
    ("a=1 and (b=2 or c=3)", All([Term("a", "=", "1"), Any([Term("b", "=", "2"), Term("c", "=", "3")])])),
    ("name = 'O\\'Brien and co'", Term("name", "=", "O'Brien and co")),
])
def test_parser_builds_the_tree(text, tree):
    assert parse_filter(text) == tree


def test_several_where_strings_are_anded():
    assert parse_filter(["age>=60", "sex=F"]) == All([Term("age", ">=", "60"), Term("sex", "=", "F")])


@pytest.mark.parametrize("text", ["", "age >=", "age 60", "(age>1", "age in 1", "age is maybe", "age >= 1 xor b=2"])
def test_parser_rejects_malformed_text_with_a_hint(text):
    with pytest.raises(StoreError, match="filter"):
        parse_filter(text)


def test_compiled_sql_binds_every_value_and_quotes_checked_columns():
    sql, params = compile_filter(parse_filter("age >= 60 and (sex in (F, M) or labels contains AF)"), COLUMNS)
    assert sql == '(("age" >= ?) AND (("sex" IN (?, ?)) OR list_contains("labels", ?)))'
    assert params == [60, "F", "M", "AF"]


@pytest.mark.parametrize("tree,message", [
    (Term("read_csv('/etc/passwd')", "=", "x"), "not in this store"),
    (Term('age" OR 1=1 --', "=", "x"), "not in this store"),
    (Term("age", "; DROP TABLE ecg", 1), "operator"),
    (Term("age", ">=", "sixty"), "BIGINT"),
    (Term("labels", "=", "AF"), "contains"),
    (Term("paced", "<", True), "boolean"),
    (Term("age", "contains", "1"), "contains"),
    (Term("age", "in", "1,2"), "list"),
    (Term("age", "=", None), "is null"),
])
def test_compile_refuses_what_the_schema_does_not_allow(tree, message):
    with pytest.raises(StoreError, match=message):
        compile_filter(tree, COLUMNS)


def test_injection_attempts_on_a_real_store_are_plain_values_or_refused(tmp_path, rows):
    with Store.open(tmp_path / "s") as store:
        upsert_rows(store, rows)
        store.update_metadata({"ecg-3": {"sex": "1; DROP TABLE ecg"}})
        q = rows["vectors"][3]
        hits = store.search(q, k=5, filter=parse_filter("sex = '1; DROP TABLE ecg'"))[0]
        assert [h.ecg_id for h in hits] == ["ecg-3"]
        assert store.search(q, k=5, filter=Term("sex", "=", "x' OR '1'='1"))[0] == []
        for column in ("read_csv('/etc/passwd')", "ecg_id; DROP TABLE ecg", "seq", "record_vector"):
            with pytest.raises(StoreError, match="not in this store"):
                store.search(q, k=5, filter=Term(column, "=", "1"))
        with pytest.raises(StoreError, match="unknown column"):
            store.search(q, k=5, columns=["read_csv('/etc/passwd')"])
        with pytest.raises(StoreError, match="column name"):
            store.upsert(["x"], np.ones((1, IDENTITY.dim), np.float32), identity=IDENTITY,
                         metadata=[{"a) ; DROP TABLE ecg; --": 1}])
        assert store.info().n_ecgs == len(rows["ecg_ids"])
