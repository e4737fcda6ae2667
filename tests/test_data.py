"""Reading tables: formats, row numbers, and the messages bad input gets."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from siamese_search.core.errors import DataError
from siamese_search.core.tables import (
    Columns,
    check_trainable,
    count_records,
    iter_table,
    read_table,
)
from tests.conftest import TOY_ROWS, write_csv

COLUMNS = Columns(text="text", label="label")


def test_csv_jsonl_parquet_read_the_same_rows(tmp_path):
    csv_path = write_csv(tmp_path / "t.csv", TOY_ROWS)
    jsonl_path = tmp_path / "t.jsonl"
    jsonl_path.write_text(
        "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in TOY_ROWS)
    )
    parquet_path = tmp_path / "t.parquet"
    texts, labels = [t for t, _ in TOY_ROWS], [lab for _, lab in TOY_ROWS]
    pq.write_table(pa.table({"text": texts, "label": labels}), parquet_path)
    tables = [read_table(p, COLUMNS) for p in (csv_path, jsonl_path, parquet_path)]
    for table in tables:
        assert table.texts == [t for t, _ in TOY_ROWS]
        assert table.labels == [lab for _, lab in TOY_ROWS]
        assert table.ids == [str(i) for i in range(len(TOY_ROWS))]


def test_integer_labels_become_strings(sample_train):
    table = read_table(sample_train, Columns(text="text", label="class"))
    assert len(table.texts) == 100
    assert sorted(set(table.labels)) == ["1", "2", "3", "4", "5"]


def test_chunks_are_bounded(tmp_path):
    path = write_csv(tmp_path / "big.csv", [(f"text {i}", "a") for i in range(25)])
    sizes = [len(chunk) for chunk in iter_table(path, COLUMNS, chunk_rows=10)]
    assert sizes == [10, 10, 5]


def test_missing_file_says_so(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "absent.csv", COLUMNS)


def test_unsupported_type_lists_supported(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match=r"unsupported file type '.xlsx'.*\.csv"):
        read_table(path, COLUMNS)


def test_missing_column_names_the_columns_and_the_flag(tmp_path):
    path = write_csv(tmp_path / "t.csv", TOY_ROWS, header=("message", "label"))
    with pytest.raises(DataError, match=r"no column 'text'.*'message'.*--text-column"):
        read_table(path, COLUMNS)


def test_bad_rows_are_reported_with_line_numbers(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(
        b"text,label\n"
        b"good text,a\n"
        b",a\n"  # line 3: empty text
        b"caf\xe9 au lait,a\n"  # line 4: Latin-1 byte, not UTF-8
        b"one,two,three\n"  # line 5: wrong number of fields
        b"no label,\n"  # line 6: empty label
    )
    chunks = list(iter_table(path, COLUMNS))
    assert [t for c in chunks for t in c.texts] == ["good text"]
    problems = {p.line: p.reason for c in chunks for p in c.problems}
    assert problems[3].startswith("empty text")
    assert "not UTF-8" in problems[4]
    assert "3 fields where the header has 2" in problems[5]
    assert problems[6].startswith("empty label")
    with pytest.raises(DataError, match=r"(?s)4 unusable row\(s\).*line 3"):
        read_table(path, COLUMNS)


def test_a_quote_left_open_is_found_not_read_as_one_long_row(tmp_path):
    """An open quote swallows every line up to the next quote character. Ending the
    file inside it refuses the file (20,000 rows would otherwise go as one bad row);
    closed later, the one problem names the lines it ran over, and reading goes on.
    A quoted field followed by more than a delimiter is a problem, not rejoined text."""
    rows = "".join(f"row {i},a\n" for i in range(20_000))
    to_the_end = tmp_path / "open.csv"
    to_the_end.write_text(f'text,label\nfine,a\n"left open,a\n{rows}')
    with pytest.raises(
        DataError, match=r"line 3: a quoted field .* never closed, so lines 3-20003"
    ):
        list(iter_table(to_the_end, COLUMNS))
    assert count_records(to_the_end) == 0  # no progress total; the reading pass says why
    closed_later = tmp_path / "later.csv"
    closed_later.write_text('text,label\n"left open,a\nrow,a\n"quoted",a\nafter,a\n"x"y,a\nz,a\n')
    chunks = list(iter_table(closed_later, COLUMNS))
    assert [t for c in chunks for t in c.texts] == ["after", "z"]
    problems = {p.line: p.reason for c in chunks for p in c.problems}
    assert problems[2].endswith("(the record ran over lines 2-4: is a quote left open?)")
    assert problems[6] == "unreadable CSV: ',' expected after '\"'"
    assert count_records(closed_later) == 4  # as many records as the reading pass sees


def test_jsonl_non_string_text_and_broken_json(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n{"text": 42, "label": "a"}\n{broken\n')
    problems = {p.line: p.reason for c in iter_table(path, COLUMNS) for p in c.problems}
    assert "int, not a string" in problems[2]
    assert "not valid JSON" in problems[3]


def test_a_jsonl_line_over_the_limit_is_a_problem_read_past_in_pieces(tmp_path, monkeypatch):
    from siamese_search.core import tables

    monkeypatch.setattr(tables, "MAX_FIELD_BYTES", 64)
    path = tmp_path / "long.jsonl"
    lines = [{"text": "short", "label": "a"}, {"text": "x" * 500, "label": "a"}]
    lines += [{"text": "after", "label": "a"}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    chunks = list(iter_table(path, COLUMNS))
    assert [t for c in chunks for t in c.texts] == ["short", "after"]
    assert [(p.line, p.reason) for c in chunks for p in c.problems] == [
        (2, "a line longer than the limit of 64 bytes")
    ]
    assert count_records(path) == 3


def test_a_text_longer_than_a_csv_field_is_a_problem_in_every_format(tmp_path, monkeypatch):
    """Parquet has no field limit of its own: a text it held over the CSV reader's made
    an index whose export (what retrain trains on) could not be read back."""
    from siamese_search.core import tables

    monkeypatch.setattr(tables, "MAX_FIELD_BYTES", 64)
    path = tmp_path / "long.parquet"
    pq.write_table(pa.table({"text": ["short", "x" * 65], "label": ["a", "a"]}), path)
    chunks = list(iter_table(path, COLUMNS))
    assert [t for c in chunks for t in c.texts] == ["short"]
    assert [(p.line, p.reason) for c in chunks for p in c.problems] == [
        (2, "a text of 65 characters in column 'text'; the limit is 64")
    ]


def test_training_needs_two_classes_and_pairs(tmp_path):
    with pytest.raises(DataError, match="at least 2 classes"):
        check_trainable(tmp_path / "x.csv", ["a", "a", "a"])
    with pytest.raises(DataError, match="have a single example: 'b'"):
        check_trainable(tmp_path / "x.csv", ["a", "a", "b"])
    assert check_trainable(tmp_path / "x.csv", ["a", "a", "b", "b"]) == {"a": 2, "b": 2}
